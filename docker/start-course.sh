#!/bin/bash
# Entry point of the course image (run under dumb-init, which reaps kernels'
# orphans and forwards signals).
#
# Copies the course notebooks (COURSE_SEED_DIR, default /opt/course/notebooks)
# into ~/notebooks (COURSE_SEED_TARGET) on each start, without overwriting
# anything: a student's edited notebook stays as it is, and a lesson added to
# a newer image appears next to it. COURSE_SEED_HOME=0 skips this. Then runs
# the command (JupyterLab by default, jupyterhub-singleuser under JupyterHub).
set -euo pipefail

seed_dir=${COURSE_SEED_DIR:-/opt/course/notebooks}
target=${COURSE_SEED_TARGET:-$HOME/notebooks}
if [[ ${COURSE_SEED_HOME:-1} == 1 && -d $seed_dir && -w $HOME ]]; then
    python - "$seed_dir" "$target" <<'PY'
import shutil
import sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for path in sorted(src.rglob("*")):
    target = dst / path.relative_to(src)
    if path.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    elif not target.exists():
        shutil.copy2(path, target)
PY
fi

exec "$@"
