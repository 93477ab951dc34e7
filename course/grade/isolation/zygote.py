"""A fork server for kernels: import torch once, fork a sandboxed kernel per submission.

Where the time goes when nbgrader grades a PyTorch assignment: starting a
fresh ``python -m ipykernel`` (~0.5-1 s) and ``import torch`` in it
(~2 s, more on a busy machine) dwarf running a student's cells.  So the
grader starts this *zygote* once; it imports ipykernel, IPython and the
modules the assignment imports, freezes the heap (``gc.freeze``, so that
forked children share its pages), then waits.  For each kernel it forks:

    zygote (root, preloaded)
      `-- supervisor   joins the kernel's cgroup (see course.grade.isolation.cgroups),
            |          new namespaces, the box (see course.grade.isolation.sandbox),
            |          forwards SIGINT/SIGTERM, mirrors the kernel's exit
            `-- kernel pid 1 of its namespace, drops to the sandbox uid,
                       then runs ipykernel in-process on the ipc sockets
                       named by the connection file

The forked kernel is a normal IPython kernel whose ``import torch`` costs
nothing; everything else (execution, outputs, scoring) is unchanged.
A kernelspec that is not this Python's ipykernel is ``exec``-ed inside the
same sandbox instead (no preload, same isolation).

Protocol: JSON lines over a unix socket.  Request ``{"op": "spawn", "spec":
BoxSpec, "kernel": {...}}``; replies ``{"op": "spawned", "pid": N}`` or
``{"op": "error", "message": ...}``; later ``{"op": "exit", "pid": N,
"returncode": R}`` on the same connection (R as in ``Popen.returncode``:
negative for a signal).  A closed connection kills its kernels.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback

from course.grade.codes import ExitCode
from course.grade.isolation import guard, linux, sandbox

#: Always preloaded: what an IPython kernel imports while starting.
KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython.core.interactiveshell",
    "IPython.core.debugger",
    "IPython.core.completerlib",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "matplotlib_inline.backend_inline",
    "tornado.platform.asyncio",
    "tornado.queues",
    "encodings.idna",
    "sqlite3",
    "pdb",
    "faulthandler",
    "comm",
    "jedi",
    "course.grade.isolation.kernel_io",
    "course.grade.isolation.guard",
)

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def preload(modules: list[str]) -> dict[str, str]:
    """Import the kernel machinery and ``modules``; return import failures."""
    failures = {}
    for name in [*KERNEL_MODULES, *modules]:
        try:
            importlib.import_module(name)
        except Exception as error:  # a missing optional module only costs speed
            failures[name] = f"{type(error).__name__}: {error}"
    try:  # build the kernel's output class now rather than in every kernel
        importlib.import_module("course.grade.isolation.kernel_io").CappedOutStream  # noqa: B018
    except Exception as error:
        failures["course.grade.isolation.kernel_io"] = str(error)
    # Objects that exist now never move: forked kernels keep sharing their pages.
    gc.collect()
    gc.freeze()
    return failures


# --------------------------------------------------------------------------
# inside a forked child


def _forget_zygote_state() -> None:
    """Make the forked kernel look like a fresh process.

    ``random`` reseeds itself after fork; numpy's legacy global generator,
    created when the zygote imported numpy, does not.  ``tempfile`` caches
    the temp folder it found in the zygote's environment.
    """
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
    tempfile.tempdir = None


def _start_ipykernel(args: list[str]) -> int:
    """Run ipykernel in this process, as ``python -m ipykernel_launcher ARGS``."""
    sys.argv = ["ipykernel_launcher", *args]
    if sys.path and sys.path[0] == "":
        del sys.path[0]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance(argv=args)
    return 0


def _kernel_main(spec: sandbox.BoxSpec, kernel: dict, alive: int) -> None:
    """The kernel process: finish the sandbox, drop privileges, run the kernel.

    ``alive`` is the read end of a pipe whose write end only the supervisor
    holds: it turns readable (EOF) once the supervisor is gone.
    """
    code = 1
    try:
        os.setsid()
        linux.die_with_parent()
        if spec.isolate:
            sandbox.enter_kernel_namespace(spec)
        sandbox.redirect_stdio(kernel.get("log"))
        os.chdir(spec.workdir)
        os.environ.clear()
        os.environ.update(spec.env)
        sandbox.apply_limits(spec.limits)
        if spec.isolate:
            sandbox.drop_privileges(spec.uid, spec.gid)
            # Changing uid cleared the parent-death signal: arm it again, then
            # make sure the supervisor did not die in between.
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([alive], [], [], 0)[0]:
            os._exit(1)
        os.close(alive)
        _forget_zygote_state()
        guard.install(spec.blocked_packages)
        if kernel.get("ipykernel_args") is not None:
            code = _start_ipykernel(kernel["ipykernel_args"])
        else:
            argv = kernel["argv"]
            os.execvpe(argv[0], argv, spec.env)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _supervise(spec: sandbox.BoxSpec, kernel: dict) -> None:
    """The supervisor: build the sandbox, fork the kernel, mirror how it ends."""
    child = [0]
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if child[0]:
            try:
                os.kill(child[0], signum)
            except ProcessLookupError:
                pass
        else:
            pending.append(signum)

    try:
        linux.die_with_parent()
        if spec.cgroup is not None:
            # First, before anything is copied or forked: all of it counts.
            spec.cgroup.join()
        for signum in _FORWARDED:
            signal.signal(signum, forward)
        if spec.isolate:
            linux.unshare(linux.NAMESPACES)
            sandbox.build_box(spec)
        alive, keep = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(keep)
            for signum in _FORWARDED:
                signal.signal(signum, signal.SIG_DFL)
            _kernel_main(spec, kernel, alive)
        os.close(alive)
        child[0] = pid
        for signum in pending:
            os.kill(pid, signum)
        _, status = os.waitpid(pid, 0)
    except BaseException:
        print(f"[supervisor {os.getpid()}] sandbox setup failed:", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(ExitCode.SUPERVISOR_FAILED)
    if os.WIFSIGNALED(status):
        _die_of(os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _die_of(signum: int) -> None:
    """End this process by ``signum``, so the grader sees what killed the kernel.

    SIGKILL and SIGSTOP cannot be given a handler (``signal.signal`` raises
    for them, which once made every OOM kill read "exited with status 1"):
    their default action is the only one.  No core file is written.
    """
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if signum not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    os.kill(os.getpid(), signum)
    time.sleep(1)
    os._exit(1)


# --------------------------------------------------------------------------
# the server loop


class Zygote:
    """The fork server: answers spawn requests and reports exits."""

    def __init__(self, sock_path: str) -> None:
        self.sock_path = sock_path
        self.selector = selectors.DefaultSelector()
        self.owners: dict[int, socket.socket] = {}
        self.buffers: dict[socket.socket, bytes] = {}
        self.listener: socket.socket | None = None
        self.wakeup_r, self.wakeup_w = os.pipe()

    def listen(self) -> None:
        """Bind the socket (root-only) and watch it and the SIGCHLD pipe."""
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.listener.bind(self.sock_path)
        finally:
            os.umask(old)
        self.listener.listen(64)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        os.set_blocking(self.wakeup_w, False)
        os.set_blocking(self.wakeup_r, False)
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, "child")

    def serve_forever(self) -> None:
        """Handle connections, requests and exits until killed."""
        while True:
            for key, _ in self.selector.select():
                if key.data == "accept":
                    conn, _ = self.listener.accept()
                    self.buffers[conn] = b""
                    self.selector.register(conn, selectors.EVENT_READ, "client")
                elif key.data == "child":
                    try:
                        os.read(self.wakeup_r, 4096)
                    except BlockingIOError:
                        pass
                    self.reap()
                else:
                    self.read_client(key.fileobj)

    def read_client(self, conn: socket.socket) -> None:
        """Read requests from one grader worker; a closed connection kills its kernels."""
        data = conn.recv(65536)
        if not data:
            self.selector.unregister(conn)
            del self.buffers[conn]
            for pid, owner in list(self.owners.items()):
                if owner is conn:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            conn.close()
            return
        self.buffers[conn] += data
        while b"\n" in self.buffers[conn]:
            line, self.buffers[conn] = self.buffers[conn].split(b"\n", 1)
            self.handle(conn, json.loads(line))

    def handle(self, conn: socket.socket, request: dict) -> None:
        """Fork a supervisor for a spawn request."""
        if request.get("op") != "spawn":
            self.send(conn, {"op": "error", "message": f"unknown op {request.get('op')!r}"})
            return
        spec = sandbox.BoxSpec.from_json(request["spec"])
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the supervisor
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") < 65536 else 65536)
            _supervise(spec, request["kernel"])
        self.owners[pid] = conn
        self.send(conn, {"op": "spawned", "pid": pid, "id": request.get("id")})

    def reap(self) -> None:
        """Collect finished supervisors and tell their owners."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.owners.pop(pid, None)
            if conn is not None and conn in self.buffers:
                self.send(conn, {"op": "exit", "pid": pid, "returncode": os.waitstatus_to_exitcode(status)})

    def send(self, conn: socket.socket, message: dict) -> None:
        """One JSON line to a worker; a vanished worker is ignored."""
        try:
            conn.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    """``python -m course.grade.isolation.zygote SOCKET``: preload, then serve.

    Reads the modules to preload as one JSON list on stdin (not from argv:
    forked kernels inherit the zygote's ``/proc/self/cmdline``), prints one
    JSON line on stdout when ready (with the import failures), and dies
    with the process that started it.
    """
    argv = sys.argv[1:] if argv is None else argv
    sock_path = argv[0]
    modules = [str(m) for m in json.loads(sys.stdin.readline() or "[]")]
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    linux.die_with_parent()
    # Kernels whose supervisor was killed come back here to be reaped, so no
    # zombie keeps counting against a sandbox uid's process limit.
    if sys.platform.startswith("linux"):
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    started = time.perf_counter()
    failures = preload(modules)
    zygote = Zygote(sock_path)
    zygote.listen()
    ready = {"ready": True, "seconds": round(time.perf_counter() - started, 3), "failed": failures}
    print(json.dumps(ready), flush=True)
    zygote.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
