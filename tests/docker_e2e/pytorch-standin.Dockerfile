# A CPU stand-in for pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime, for the
# end-to-end test (tests/test_docker_e2e.py) on machines without a registry.
#
# What docker/Dockerfile relies on, laid out as in the real image: Python
# 3.11 at /opt/conda/bin (first on PATH, `python` and `pip` there), a PyTorch
# already installed that the course must keep, no user with UID 1000. The
# torch here is the local CPU wheel (the build context holds it), not the
# CUDA build. Its base is a Debian bookworm minbase made with debootstrap and
# `docker import` (tests/docker_e2e/docker_engine.py).
ARG MINBASE=course-e2e/bookworm:minbase
FROM ${MINBASE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8
# torch's own dependencies come from the package registry; the host's CA
# bundle (a TLS-inspecting proxy) arrives as a secret, never in a layer.
RUN --mount=type=bind,source=.,target=/wheels \
    --mount=type=secret,id=ca-certificates \
    if [ -f /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
 && python3 -m venv /opt/conda \
 && pip install --no-cache-dir /wheels/torch-*.whl \
 && python -c "import torch; print('stand-in torch', torch.__version__)"
