"""Docker HEALTHCHECK of the course image: is the Jupyter server answering?

A Jupyter server writes ``jpserver-<pid>.json`` into its runtime directory
with the URL it serves (including a JupyterHub user prefix such as
/user/alice/). The check asks that server's ``api`` endpoint, which needs no
token, and exits 0 when it answers 200. A container that runs a batch
command instead (``course run``, ``course doctor``) has no server and is
reported unhealthy, which is the truth for a container meant to serve.
"""

import json
import os
import sys
import urllib.request
from pathlib import Path


def runtime_dir():
    explicit = os.environ.get("JUPYTER_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    data = os.environ.get("JUPYTER_DATA_DIR") or Path.home() / ".local" / "share" / "jupyter"
    return Path(data) / "runtime"


def server_urls(directory):
    for info_file in sorted(directory.glob("jpserver-*.json")):
        try:
            url = json.loads(info_file.read_text(encoding="utf-8"))["url"]
        except (OSError, ValueError, KeyError):
            continue
        yield url if url.endswith("/") else url + "/"


def main():
    directory = runtime_dir()
    urls = list(server_urls(directory))
    if not urls:
        print(f"unhealthy: no Jupyter server info in {directory}")
        return 1
    # Talk to the server directly, whatever proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for url in urls:
        # The server listens on all interfaces; ask it on loopback.
        target = url.replace("://0.0.0.0:", "://127.0.0.1:") + "api"
        try:
            with opener.open(target, timeout=5) as response:
                if response.status == 200:
                    return 0
        except OSError as error:
            print(f"unhealthy: {target}: {error}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
