# A stand-in for quay.io/jupyterhub/jupyterhub:5.5.0, for the end-to-end test
# (tests/test_docker_e2e.py) on machines that cannot reach quay.io.
#
# As in the real image: `python3 -m pip install` installs next to JupyterHub
# (here a venv first on PATH), configurable-http-proxy is on PATH, the
# working directory is /srv/jupyterhub. Made from Debian's nodejs and npm, the
# npm package configurable-http-proxy and JupyterHub from PyPI.
ARG MINBASE=course-e2e/bookworm:minbase
FROM ${MINBASE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PATH=/opt/hub/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8
ARG JUPYTERHUB_VERSION=5.5.0
ARG CHP_VERSION=4.6.3
# hadolint ignore=DL3008
RUN --mount=type=secret,id=ca-certificates \
    if [ -f /run/secrets/ca-certificates ]; then \
        export PIP_CERT=/run/secrets/ca-certificates NODE_EXTRA_CA_CERTS=/run/secrets/ca-certificates; \
    fi \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm \
 && npm install -g --no-audit --no-fund "configurable-http-proxy@${CHP_VERSION}" \
 && npm cache clean --force \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/hub \
 && python3 -m pip install --no-cache-dir "jupyterhub==${JUPYTERHUB_VERSION}" \
 && configurable-http-proxy --version && jupyterhub --version
WORKDIR /srv/jupyterhub
EXPOSE 8000
CMD ["jupyterhub"]
