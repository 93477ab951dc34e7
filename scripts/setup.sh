#!/usr/bin/env bash
# Set up .venv with the course installed (idempotent: rerunning is cheap).
#
#   scripts/setup.sh           the course: torch, transformers, JupyterLab, nbgrader, papermill ...
#   scripts/setup.sh --test    also the test tools, and Debian's chromium + postgresql for
#                              the browser and gradebook tests (needs root or sudo for apt)
#
# torch is installed first and never replaced:
#   - on a CPU machine like the CI one, TORCH_SPEC defaults to the local CPU wheel torch==2.13.0;
#   - on the PyTorch 2.8 CUDA image, use the image's torch: VENV_FLAGS=--system-site-packages
#     (the venv then sees the image's torch, and pip keeps it because it satisfies torch>=2.8).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
with_tests=false
[ "${1:-}" = "--test" ] && with_tests=true

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  # shellcheck disable=SC2086  # VENV_FLAGS is a list of flags
  "$PYTHON" -m venv ${VENV_FLAGS:-} "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing $TORCH_SPEC"
  pip install "$TORCH_SPEC"
fi
echo "setup: installing the course (editable)$($with_tests && echo ' with test tools')"
if $with_tests; then pip install -e ".[test]"; else pip install -e .; fi

if $with_tests; then
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v setpriv >/dev/null && command -v unshare >/dev/null || missing+=(util-linux)
  [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)   # the Docker end-to-end test
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
"$VENV/bin/python" -c "import torch, course; print(f'setup: ok (torch {torch.__version__}, course {course.__version__})')"
