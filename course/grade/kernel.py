"""The grader's side of a sandboxed kernel: a jupyter_client KernelManager.

nbgrader's Execute preprocessor (nbclient underneath) starts kernels
through a ``KernelManager``, which hands the process to a *provisioner*.
:class:`SandboxKernelManager` installs :class:`ZygoteProvisioner`, which,
instead of ``Popen``-ing the kernelspec's command, asks the zygote to fork
a kernel inside a sandbox.  The rest of jupyter_client is untouched: the
kernel talks over the ipc sockets named in the connection file,
interrupts are SIGINT, shutdown is SIGKILL.

:class:`ZygoteProcess` stands in for the ``Popen`` object the provisioner
expects (``poll``, ``wait``, ``send_signal``, ``kill``, ``returncode``).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import sys
import time
import uuid

from course.grade import guard
from course.grade.sandbox import BoxSpec


class ZygoteClient:
    """One grader worker's connection to the zygote."""

    def __init__(self, sock_path: str, connect_timeout: float = 600.0) -> None:
        self.sock_path = sock_path
        self.sock = self._connect(connect_timeout)
        self.buffer = b""
        self.exits: dict[int, int] = {}

    def _connect(self, timeout: float) -> socket.socket:
        """Connect, waiting while the zygote is still importing torch."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.sock_path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _read(self, timeout: float | None) -> list[dict]:
        """Messages available within ``timeout`` seconds (None: block for one)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return []
        finally:
            self.sock.settimeout(None)
        if not data:
            raise ConnectionError("the kernel zygote went away")
        self.buffer += data
        messages = []
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            message = json.loads(line)
            if message.get("op") == "exit":
                self.exits[message["pid"]] = message["returncode"]
            else:
                messages.append(message)
        return messages

    def spawn(self, spec: BoxSpec, kernel: dict) -> int:
        """Ask for a sandboxed kernel; return the supervisor's pid."""
        request = {"op": "spawn", "spec": spec.to_json(), "kernel": kernel}
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            for message in self._read(None):
                if message.get("op") == "spawned":
                    return message["pid"]
                raise RuntimeError(message.get("message", "the zygote refused to start a kernel"))

    def returncode(self, pid: int) -> int | None:
        """The exit code of a supervisor if it has ended (non-blocking)."""
        if pid not in self.exits:
            self._read(0)
        return self.exits.get(pid)

    def close(self) -> None:
        """Close the connection (the zygote kills this worker's kernels)."""
        self.sock.close()


class ZygoteProcess:
    """A ``Popen`` look-alike for a kernel started by the zygote.

    The pid is the supervisor's, which forwards signals to the kernel and
    ends the way the kernel ended (same exit code, or killed by the same
    signal), so ``returncode`` reads like ``Popen.returncode``.
    """

    stdin = stdout = stderr = None

    def __init__(self, client: ZygoteClient, pid: int) -> None:
        self.client = client
        self.pid = pid
        self.returncode: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def poll(self) -> int | None:
        """The return code, or None while the kernel runs."""
        if self.returncode is None:
            self.returncode = self.client.returncode(self.pid)
            if self.returncode is not None and self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Block until the kernel has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"kernel supervisor {self.pid} still running")
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """Signal the supervisor (which forwards to the kernel)."""
        if self.poll() is not None:
            return
        if self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, signum)
        else:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL: the kernel and its whole pid namespace die with the supervisor."""
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM, forwarded to the kernel."""
        self.send_signal(signal.SIGTERM)


def ipykernel_args(cmd: list[str]) -> list[str] | None:
    """The arguments after ``-m ipykernel_launcher`` when ``cmd`` runs this Python's ipykernel.

    Only then can the preloaded zygote stand in for the command; any other
    kernel (another interpreter, another language) is exec-ed instead.
    """
    if len(cmd) < 3 or cmd[1] != "-m" or cmd[2] not in ("ipykernel_launcher", "ipykernel"):
        return None
    try:
        same = os.path.samefile(cmd[0], sys.executable)
    except OSError:
        same = False
    return list(cmd[3:]) if same else None


@functools.cache
def _provisioner_class():
    """Build the provisioner class (jupyter_client is imported only when grading)."""
    from jupyter_client.provisioning import LocalProvisioner

    class ZygoteProvisioner(LocalProvisioner):
        """Launch the kernel through the zygote instead of ``Popen``."""

        async def launch_kernel(self, cmd: list[str], **kwargs) -> dict:
            km = self.parent
            spec: BoxSpec = km.box_spec
            if spec.isolate:
                os.chown(km.connection_file, spec.uid, spec.gid)
            args = ipykernel_args(cmd)
            if args is not None:
                module = guard.KERNEL_IO_ALIAS if spec.blocked_packages else "course.grade.kernel_io"
                args.append(f"--IPKernelApp.outstream_class={module}.CappedOutStream")
            kernel = {"ipykernel_args": args, "argv": cmd, "log": km.kernel_log}
            pid = km.zygote.spawn(spec, kernel)
            self.process = ZygoteProcess(km.zygote, pid)
            self.pid = pid
            self.pgid = None
            self.cwd = spec.workdir
            return self.connection_info

    return ZygoteProvisioner


#: Largest message the grader accepts from a kernel: a bigger one closes the
#: connection (ZMQ_MAXMSGSIZE) instead of landing in the grader's memory.
MAX_MESSAGE_BYTES = 64 * 2**20


@functools.cache
def capped_client_class():
    """An AsyncKernelClient whose sockets refuse messages over :data:`MAX_MESSAGE_BYTES`.

    Student code can send one huge message (``display({"text/plain": "x" * 10**9}, raw=True)``);
    the output caps act only once it has arrived, so the limit is set on the socket itself.
    """
    import zmq
    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.connect import channel_socket_types

    class CappedKernelClient(AsyncKernelClient):
        """A kernel client that cannot be made to hold a message larger than the cap."""

        def _create_connected_socket(self, channel, identity=None):
            sock = self.context.socket(channel_socket_types[channel])
            sock.linger = 1000
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            if identity:
                sock.identity = identity
            if getattr(self, "curve_publickey", None) is not None:
                sock.curve_secretkey = self.curve_secretkey
                sock.curve_publickey = self.curve_publickey
                sock.curve_serverkey = self.curve_publickey
            sock.connect(self._make_url(channel))
            return sock

    return CappedKernelClient


@functools.cache
def sandbox_kernel_manager_class():
    """The KernelManager class for sandboxed kernels (built lazily, see above)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Any, Unicode

    provisioner_class = _provisioner_class()
    client_class = capped_client_class()

    class SandboxKernelManager(AsyncKernelManager):
        """An AsyncKernelManager whose kernels come from the zygote, over ipc."""

        box_spec = Any(help="the BoxSpec of the kernel to start")
        zygote = Any(help="the ZygoteClient to ask")
        kernel_log = Unicode("", help="file receiving the kernel's own stdout/stderr")

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.client_factory = client_class

        async def _async_pre_start_kernel(self, **kw):
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", None) or str(uuid.uuid4())
            if self.provisioner is None:
                self.provisioner = provisioner_class(
                    kernel_id=self.kernel_id,
                    kernel_spec=self.kernel_spec,
                    parent=self,
                )
            return await super()._async_pre_start_kernel(**kw)

    return SandboxKernelManager
