"""A private Docker engine for the end-to-end test: started, used, and removed without a trace.

The test (tests/test_docker_e2e.py) needs a real engine but must not touch
the machine's own Docker, if any, nor leave anything behind. So it runs its
own ``dockerd``, everything under one scratch folder::

    <root>/                   mkdtemp, removed at the end
      docker.sock             the API socket (DOCKER_HOST=unix://<root>/docker.sock)
      disk.img                a sparse file holding an ext4 file system, mounted on disk/
      disk/data/              --data-root: images, containers, volumes
      disk/rootfs/            the debootstrap tree that becomes the base image
      exec/                   --exec-root: containerd's state and sockets
      dockerd.pid, dockerd.log

Why a file system of its own: the image store is hundreds of thousands of
small files, and on a disk mounted with online ``discard`` (as here) deleting
them takes about ten minutes; unmounting ``disk/`` and deleting the one
``disk.img`` takes seconds. Where loop devices are unavailable it falls back
to plain folders (``COURSE_E2E_LOOP=0`` forces that).

with ``--bridge none --iptables=false --ip-masq=false``: no docker0, no
iptables chains, no private-range addresses. Every container and build uses
the host network (``--network host``), and every server listens on
127.0.0.1. Stopping removes the containers, stops dockerd (which stops its
containerd), unmounts what is left and deletes the folder; ``leftovers()``
says what, if anything, survived.

No image registry is needed: the base is Debian bookworm made with
``debootstrap --variant=minbase`` and ``docker import``; the stand-ins for
the PyTorch and JupyterHub images are built on it (the Dockerfiles next to
this file). Run by hand to keep an engine for poking around::

    python tests/docker_e2e/docker_engine.py up /tmp/e2e     # prints the DOCKER_HOST to use
    python tests/docker_e2e/docker_engine.py down /tmp/e2e
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: The Docker client: Debian's docker.io package (BuildKit built in). A newer
#: client without the buildx plugin would fall back to the legacy builder,
#: which rejects ``RUN --mount``.
DOCKER_CLIENT = os.environ.get("COURSE_E2E_DOCKER", "/usr/bin/docker")
DOCKERD = os.environ.get("COURSE_E2E_DOCKERD", "/usr/sbin/dockerd")
DEBIAN_MIRROR = os.environ.get("COURSE_E2E_DEBIAN_MIRROR", "http://deb.debian.org/debian")

MINBASE = "course-e2e/bookworm:minbase"
PYTORCH_STANDIN = "course-e2e/pytorch:standin"
JUPYTERHUB_STANDIN = "course-e2e/jupyterhub:standin"


class EngineError(RuntimeError):
    """The engine could not be started or used; the message says what to do."""


def ca_bundle() -> str | None:
    """The host's CA bundle for pip/npm inside builds (a TLS-inspecting proxy's CA included).

    Handed to builds as the BuildKit secret ``ca-certificates``: it is mounted
    only during the steps that download, and never stored in a layer.
    """
    for candidate in (
        os.environ.get("COURSE_E2E_CA_BUNDLE"),
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        os.environ.get("REQUESTS_CA_BUNDLE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


class Engine:
    """One dockerd of our own, on its own socket and data root."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root or tempfile.mkdtemp(prefix="course-e2e-"))
        self.root.mkdir(parents=True, exist_ok=True)
        # containers running as jovyan must reach bind-mounted folders below it
        self.root.chmod(0o755)
        self.socket = self.root / "docker.sock"
        self.disk_image = self.root / "disk.img"
        self.disk = self.root / "disk"
        self.data_root = self.disk / "data"
        self.exec_root = self.root / "exec"
        self.pidfile = self.root / "dockerd.pid"
        self.log = self.root / "dockerd.log"
        self.process: subprocess.Popen | None = None
        self.network_before = self._network_state()

    @classmethod
    def attach(cls, socket: str) -> Engine:
        """Use an engine someone else started (developing the test): never stopped or deleted here."""
        engine = cls.__new__(cls)
        engine.socket = Path(socket)
        engine.root = Path(tempfile.mkdtemp(prefix="course-e2e-dev-"))
        engine.root.chmod(0o755)
        engine.log = engine.root / "dockerd.log"
        engine.disk = engine.root
        engine.disk_image = engine.root / "disk.img"
        engine.process = None
        engine.attached = True
        engine.network_before = cls._network_state()
        return engine

    attached = False

    @property
    def env(self) -> dict[str, str]:
        """Environment for the docker client: our socket, BuildKit on."""
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "1"}

    # ---------------------------------------------------------------- start/stop

    def start(self, timeout: float = 60) -> None:
        """Start dockerd and wait until it answers; EngineError with its log otherwise."""
        for binary in (DOCKERD, DOCKER_CLIENT):
            if not Path(binary).exists():
                raise EngineError(
                    f"{binary} is missing: install Debian's docker.io and debootstrap "
                    "(scripts/setup.sh --test does), or set COURSE_SKIP_DOCKER_E2E=1 to opt out"
                )
        if os.geteuid() != 0:
            raise EngineError("the Docker end-to-end test runs dockerd and debootstrap: run it as root")
        self._mount_disk()
        command = [
            DOCKERD,
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--host=unix://{self.socket}",
            f"--pidfile={self.pidfile}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip6tables=false",
            "--storage-driver=overlay2",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise EngineError(f"dockerd exited with {self.process.returncode}: {self.log_tail()}")
            probe = subprocess.run([DOCKER_CLIENT, "version"], env=self.env, capture_output=True, text=True)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise EngineError(f"dockerd did not answer within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.5)

    def _mount_disk(self, size_gb: int = 60) -> None:
        """An ext4 file system in a sparse file, mounted on ``disk/`` without discard (fallback: a folder)."""
        self.disk.mkdir(mode=0o755, exist_ok=True)
        if os.environ.get("COURSE_E2E_LOOP", "1") == "0" or not shutil.which("mkfs.ext4"):
            return
        with open(self.disk_image, "wb") as image:
            image.truncate(size_gb * 2**30)  # sparse: only what is written takes space
        made = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", str(self.disk_image)],
                              capture_output=True, text=True)  # fmt: skip
        mounted = made.returncode == 0 and subprocess.run(
            ["mount", "-o", "loop,nodiscard", str(self.disk_image), str(self.disk)], capture_output=True
        ).returncode == 0  # fmt: skip
        if not mounted:  # no loop devices here: plain folders, slower to delete
            self.disk_image.unlink()
            return
        self.disk.chmod(0o755)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> list[str]:
        """Remove every container, stop dockerd, delete the folder; return what was left behind."""
        if self.attached:  # only this run's containers and folder
            ids = self.docker("ps", "-aq", "--filter=name=course-", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)
            self._unmount_below(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
            return []
        if self.process is not None and self.process.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", "-v", *ids, check=False)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        left = self.leftovers()
        self._unmount_below(self.root)  # the containers' overlays, then disk/ (deepest first)
        if self.disk_image.exists():
            self.disk_image.unlink()  # the loop device detaches once nothing holds the mount
        shutil.rmtree(self.root, ignore_errors=True)
        return left

    @staticmethod
    def _network_state() -> set[str]:
        """docker0 and Docker's iptables rules, as they are now (another engine may own some)."""
        state = {"network device docker0"} if Path("/sys/class/net/docker0").exists() else set()
        if shutil.which("iptables"):
            rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
            state |= {f"iptables: {line}" for line in rules.splitlines() if "DOCKER" in line}
        return state

    def leftovers(self) -> list[str]:
        """Processes, network devices and iptables rules this engine added and left behind."""
        found = []
        marker = str(self.root)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and int(proc.name) != os.getpid():
                found.append(f"process {proc.name}: {cmdline[:200]}")
        return found + sorted(self._network_state() - self.network_before)

    @staticmethod
    def _unmount_below(root: Path) -> None:
        """Lazily unmount anything still mounted below ``root`` (deepest first)."""
        points = []
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                point = line.split()[1].encode().decode("unicode_escape")
                if point == str(root) or point.startswith(f"{root}/"):
                    points.append(point)
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

    # ---------------------------------------------------------------- client

    def docker(
        self, *args: str, check: bool = True, timeout: float | None = None, **kwargs
    ) -> subprocess.CompletedProcess:
        """Run the docker client against this engine; output captured as text."""
        kwargs.setdefault("capture_output", True)
        result = subprocess.run([DOCKER_CLIENT, *args], env=self.env, text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise EngineError(f"docker {' '.join(args[:3])} ... exited {result.returncode}: "
                              f"{(result.stderr or '')[-3000:]}{(result.stdout or '')[-2000:]}")  # fmt: skip
        return result

    def build_command(self, dockerfile: Path, context: Path, tag: str, build_args: dict[str, str]) -> list[str]:
        """``docker build`` on the host network, the CA bundle as a secret, plain progress."""
        command = [DOCKER_CLIENT, "build", "--network=host", "--progress=plain", "-f", str(dockerfile), "-t", tag]
        bundle = ca_bundle()
        if bundle:
            command.append(f"--secret=id=ca-certificates,src={bundle}")
        for name, value in build_args.items():
            command.append(f"--build-arg={name}={value}")
        return [*command, str(context)]

    def build(self, dockerfile: Path, context: Path, tag: str, log: Path, **build_args: str) -> subprocess.Popen:
        """Start a build in the background, its output in ``log``; wait with :func:`finish`."""
        handle = open(log, "wb")
        process = subprocess.Popen(
            self.build_command(dockerfile, context, tag, build_args), env=self.env, stdout=handle,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        process.log_path = log  # type: ignore[attr-defined]
        handle.close()
        return process

    # ---------------------------------------------------------------- bases

    def import_minbase(self, mirror: str = DEBIAN_MIRROR) -> None:
        """Debian bookworm minbase (python3, venv, CA certificates) as image :data:`MINBASE`."""
        rootfs = self.disk / "rootfs"
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             "bookworm", str(rootfs), mirror],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise EngineError(f"debootstrap failed ({result.returncode}): {(result.stdout + result.stderr)[-3000:]}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [DOCKER_CLIENT, "import", "-", MINBASE], stdin=tar.stdout, env=self.env, capture_output=True, text=True
        )
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise EngineError(f"docker import failed: {imported.stderr[-2000:]}")
        shutil.rmtree(rootfs, ignore_errors=True)

    def torch_wheel_context(self) -> Path:
        """A build context holding the CPU torch wheel for the PyTorch stand-in.

        ``COURSE_E2E_TORCH_WHEEL`` names a wheel; otherwise pip fetches
        ``torch==2.13.0+cpu`` the way scripts/setup.sh does (a local wheel
        from pip's find-links, or PyTorch's CPU index via PIP_EXTRA_INDEX_URL).
        """
        context = self.disk / "torch-wheel"
        context.mkdir(exist_ok=True)
        explicit = os.environ.get("COURSE_E2E_TORCH_WHEEL")
        if explicit:
            shutil.copy(explicit, context)
        else:
            spec = os.environ.get("COURSE_E2E_TORCH_SPEC", "torch==2.13.0+cpu")
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(context), spec],
                capture_output=True, text=True,
            )  # fmt: skip
            if result.returncode != 0:
                raise EngineError(
                    f"cannot get a CPU torch wheel ({spec}): {result.stderr[-1500:]}; "
                    "set COURSE_E2E_TORCH_WHEEL=/path/to/torch-...whl"
                )
        if not list(context.glob("torch-*.whl")):
            raise EngineError(f"no torch wheel in {context}")
        return context


def finish(process: subprocess.Popen, what: str, timeout: float) -> None:
    """Wait for a background build; EngineError with the end of its log when it fails."""
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = "timeout"
    if code != 0:
        tail = Path(process.log_path).read_text(errors="replace")[-4000:]  # type: ignore[attr-defined]
        raise EngineError(f"building {what} failed ({code}):\n{tail}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"up", "down"}:
        print("usage: docker_engine.py up|down ROOT", file=sys.stderr)
        return 2
    action, root = argv[0], Path(argv[1])
    engine = Engine(root)
    if action == "up":
        engine.start()
        print(f"export DOCKER_HOST=unix://{engine.socket} DOCKER_BUILDKIT=1   # dockerd pid {engine.process.pid}")
        return 0
    pid = int(engine.pidfile.read_text()) if engine.pidfile.exists() else None
    if pid:
        ids = engine.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            engine.docker("rm", "-f", "-v", *ids, check=False)
        os.kill(pid, signal.SIGTERM)
        for _ in range(120):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.5)
    engine._unmount_below(engine.root)
    shutil.rmtree(engine.root, ignore_errors=True)
    engine.network_before = set()  # by hand: report any docker0 or Docker rule at all
    left = engine.leftovers()
    print("\n".join(left) or "nothing left")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
