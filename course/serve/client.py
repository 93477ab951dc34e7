"""Drive a server from a notebook or a test: start it in the background, load-test it, stop it.

:class:`BackgroundServer` runs ``course serve`` as a child process on
127.0.0.1 and a free port, waits for its ``ready`` line, and stops it with
SIGTERM (a graceful shutdown) when the ``with`` block ends::

    with BackgroundServer(["--task", "classify"]) as server:
        httpx.post(server.url + "/classify", json={"text": "great"}).json()

:func:`load_test` is a small closed-loop load generator: ``concurrency``
clients (asyncio tasks sharing one ``httpx.AsyncClient``) each send a
request, wait for the answer, and send the next, until ``requests`` answers
came back.  It reports throughput and latency percentiles.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies (a crashed kernel leaks no server)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: the with-block's stop() still applies
        pass


class BackgroundServer:
    """``course serve ARGS --host 127.0.0.1 --port 0`` as a child process; a context manager."""

    def __init__(self, args: Sequence[str], *, start_timeout: float = 300.0, env: dict[str, str] | None = None):
        self.args = list(args)
        self.start_timeout = start_timeout
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.output: list[str] = []  # everything the server printed (stdout and stderr)

    def launch(self) -> BackgroundServer:
        """Start the process without waiting (several servers can load their models at once)."""
        command = [sys.executable, "-m", "course", "serve", *self.args, "--host", "127.0.0.1", "--port", "0"]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            bufsize=1,
            preexec_fn=_die_with_parent,
        )
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True, name="server-output").start()
        return self

    def _read(self) -> None:
        """Collect the server's output; note the URL from its ready line."""
        for line in self.process.stdout:
            self.output.append(line.rstrip())
            if line.startswith("course serve: ready on ") and not self._ready.is_set():
                self.url = line.split()[4]
                self._ready.set()
        self._ready.set()  # the process ended: stop waiting

    def wait_ready(self) -> BackgroundServer:
        """Wait for the ready line; on failure stop the process and raise with its last output."""
        self._ready.wait(self.start_timeout)
        if not self.url:
            self.stop()
            tail = " | ".join(line for line in self.output[-3:] if line.strip()) or "no output"
            raise CourseError(f"the server did not start within {self.start_timeout:g} s: {tail}")
        return self

    def start(self) -> BackgroundServer:
        """Start the server and wait until it accepts requests."""
        return self.launch().wait_ready()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (graceful: finishes requests in flight), then wait; SIGKILL only after ``timeout``."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------- load test


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise CourseError("no values: a percentile needs at least one measurement")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean / max in milliseconds."""
    ms = [1000 * v for v in latencies_s]
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms),
        "max_ms": max(ms),
    }


@dataclass
class LoadResult:
    """One load-test run: what was sent, how fast it came back."""

    concurrency: int
    requests: int
    seconds: float
    ok: int
    errors: dict[str, int] = field(default_factory=dict)  # status code (or exception name) -> count
    latency: dict[str, float] = field(default_factory=dict)
    label: str = ""

    @property
    def requests_per_s(self) -> float:
        """Answered requests (2xx) per second of wall time."""
        return self.ok / self.seconds if self.seconds else 0.0

    def row(self) -> dict[str, Any]:
        """A flat dict for a table or JSON."""
        return {**asdict(self), "requests_per_s": self.requests_per_s}


async def _load(url: str, payloads: Sequence[dict], concurrency: int, requests: int, timeout: float) -> LoadResult:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests:
            payload = payloads[sent % len(payloads)]
            sent += 1
            started = time.perf_counter()
            try:
                response = await client.post(url, json=payload)
                key = None if response.status_code < 300 else str(response.status_code)
            except httpx.HTTPError as error:
                key = type(error).__name__
            if key is None:
                latencies.append(time.perf_counter() - started)
            else:
                errors[key] = errors.get(key, 0) + 1

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    summary = latency_summary(latencies) if latencies else {}
    return LoadResult(concurrency, requests, seconds, len(latencies), errors, summary)


def load_test(
    url: str, payloads: Sequence[dict], *, concurrency: int = 8, requests: int = 64, timeout: float = 120.0
) -> LoadResult:
    """``requests`` POSTs of ``payloads`` (cycled) to ``url`` from ``concurrency`` clients at once.

    Closed loop: each client waits for its answer before sending again, so
    concurrency is the number of requests in flight.  Runs its own event loop
    in a thread, so it also works inside Jupyter (whose loop is already running).
    """
    if not payloads:
        raise CourseError("no payloads: give at least one request body")
    if concurrency < 1 or requests < 1:
        raise CourseError(f"concurrency and requests must be >= 1, got {concurrency} and {requests}")
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = asyncio.run(_load(url, payloads, concurrency, requests, timeout))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=work, name="load-test")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def plot_load(results: Sequence[LoadResult], title: str = "Load test") -> Figure:
    """Throughput and p50/p95/p99 latency against concurrency, one line per label."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = list(dict.fromkeys(r.label for r in results))
    for label in labels:
        rows = sorted((r for r in results if r.label == label), key=lambda r: r.concurrency)
        xs = [r.concurrency for r in rows]
        left.plot(xs, [r.requests_per_s for r in rows], marker="o", label=label or None)
        for key, style in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", ":")):
            right.plot(
                xs,
                [r.latency.get(key, float("nan")) for r in rows],
                style,
                marker=".",
                label=f"{label} {key[:3]}".strip(),
            )
    for ax, ylabel in ((left, "requests / s"), (right, "latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    right.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
