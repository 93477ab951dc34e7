"""``course serve``: check the settings, bind the port, load the models, run uvicorn.

The order matters for a clear failure:

1. settings (tasks, ``--model``, batching numbers) are checked without loading anything;
2. the port is bound *before* the models load (seconds), so "port in use" fails at once;
3. the models load; a missing folder or an uncached hub model is one line, exit 2;
4. uvicorn serves on the socket bound in step 2, and prints one ``ready`` line
   that scripts (and :class:`course.serve.client.BackgroundServer`) wait for.

Stop it with Ctrl+C or SIGTERM: requests in flight are finished first (up to
``graceful_timeout_s``), see :mod:`course.serve.app`.
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from course.errors import CourseError
from course.serve.batcher import check_batching
from course.serve.models import TASKS

#: The line printed once the server accepts requests (followed by the URL).
READY = "course serve: ready on"


@dataclass
class ServeConfig:
    """Everything ``course serve`` needs; the CLI flags map one to one."""

    tasks: Sequence[str] = ("classify", "embed", "summarize")
    models: dict[str, str] = field(default_factory=dict)  # task -> folder or name
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    device: str = "auto"
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 30.0
    graceful_timeout_s: float = 30.0
    log_level: str = "warning"

    def check(self) -> None:
        """Every setting a user can get wrong, as one line each; nothing is loaded."""
        if not self.tasks:
            raise CourseError(f"no task given: choose one or more of {', '.join(TASKS)}")
        for task in self.tasks:
            if task not in TASKS:
                raise CourseError(f"unknown task '{task}': choose from {', '.join(TASKS)}")
        for task in self.models:
            if task not in self.tasks:
                raise CourseError(f"--model {task}=... given, but '{task}' is not among --task {' '.join(self.tasks)}")
        if "generate" in self.tasks and "generate" not in self.models:
            raise CourseError("--task generate needs a causal LM: --model generate=DIR (e.g. lesson 05's saved folder)")
        check_batching(self.max_batch, self.max_wait_ms, self.max_queue)
        if not 0 <= self.port <= 65535:
            raise CourseError(f"port {self.port} is not a TCP port (0-65535; 0 picks a free one)")
        for name in ("max_body_bytes", "request_timeout_s", "graceful_timeout_s"):
            if getattr(self, name) <= 0:
                raise CourseError(f"{name} must be positive, got {getattr(self, name)}")


def parse_models(tasks: Sequence[str], values: Sequence[str] | None) -> dict[str, str]:
    """``--model`` values -> ``{task: model}``.

    ``--model DIR`` names the model of the only task; with several tasks
    write ``--model classify=DIR --model generate=DIR``.
    """
    models: dict[str, str] = {}
    for value in values or []:
        task, sep, model = value.partition("=")
        if sep and task in TASKS:
            models[task] = model
        elif len(tasks) == 1:
            models[tasks[0]] = value
        else:
            raise CourseError(f"--model {value}: with several tasks write TASK=MODEL, e.g. --model classify={value}")
        if not (model if sep and task in TASKS else value):
            raise CourseError(f"--model {value}: the model name or folder is empty")
    return models


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port), or one clear error."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise CourseError(f"cannot create a socket for {host}: {error.strerror}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart right after a stop (TIME_WAIT)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise CourseError(
                f"port {port} on {host} is in use: stop the other server or choose another with --port (0 = any free)"
            ) from None
        raise CourseError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def load_models(config: ServeConfig) -> dict[str, object]:
    """The model of every task, loaded and on its device."""
    from course.serve.models import load_task_model

    return {task: load_task_model(task, config.models.get(task), config.device) for task in config.tasks}


@contextmanager
def _quiet_sigterm() -> Iterator[None]:
    """Make a SIGTERM that uvicorn already handled end the process normally.

    uvicorn catches SIGTERM, shuts down gracefully, then raises the signal
    again for the handler that was there before; with the default handler the
    process would die "killed by SIGTERM" after a perfectly clean shutdown.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(config: ServeConfig) -> int:
    """Run the server until Ctrl+C or SIGTERM; return the exit code."""
    import uvicorn

    from course.serve.app import Limits, create_app

    config.check()
    sock = bind(config.host, config.port)
    try:
        models = load_models(config)
        limits = Limits(
            config.max_batch, config.max_wait_ms, config.max_queue, config.max_body_bytes, config.request_timeout_s
        )
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}"
        ready = f"{READY} {url} (tasks: {', '.join(models)}; docs: {url}/docs)"
        app = create_app(models, limits, on_ready=lambda: print(ready, flush=True))
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level=config.log_level,
                access_log=False,
                timeout_graceful_shutdown=config.graceful_timeout_s,
                lifespan="on",
            )
        )
        with _quiet_sigterm():
            server.run(sockets=[sock])
    finally:
        sock.close()
    print("course serve: stopped", file=sys.stderr, flush=True)
    return 0
