"""Where does a request's time go?  Timers, the profiler, and the machine's counters.

Three tools, from coarse to fine:

* **A naive loop** ``t = time.time(); f(); time.time() - t`` is what most people
  write first.  It misleads in three ways: the first calls include one-off
  work (lazy initialisation, allocator growth, kernel selection) unless you
  warm up; on a GPU, ``f()`` returns once the work is *queued*, not done,
  unless you ``torch.cuda.synchronize()``; and ``time.time()`` is a wall clock
  that can jump (use ``time.perf_counter()``).
* **torch.utils.benchmark.Timer** handles all three: it warms up, synchronises
  CUDA, picks the number of runs itself (``blocked_autorange``), uses one
  thread count you choose, and reports the median and the spread.
* **torch.profiler** shows *which operators* take the time in one batch (a table
  of the top ops) and writes a Chrome trace you open in https://ui.perfetto.dev.

:func:`machine_snapshot` reads CPU and memory (psutil) and, where present, GPU
memory and utilisation through NVML (``nvidia-ml-py``), falling back to
``nvidia-smi``.  It never fails: a missing GPU is a fact, not an error.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from course.errors import CourseError


def naive_timings(fn: Callable[[], Any], runs: int = 5) -> list[float]:
    """Seconds of each of ``runs`` calls, measured the naive way: no warm-up, no synchronisation.

    The first value usually stands out: it pays for one-off work.
    """
    times = []
    for _ in range(runs):
        started = time.time()  # the wall clock, as in most first attempts
        fn()
        times.append(time.time() - started)
    return times


def timer_measurement(
    fn: Callable[[], Any], *, min_run_time: float = 1.0, threads: int | None = None, label: str = "model"
) -> Any:
    """``torch.utils.benchmark.Timer(...).blocked_autorange()``: warm-up, sync, median and IQR.

    Returns the ``Measurement`` (``.median`` and ``.iqr`` in seconds; print it
    for a readable summary).
    """
    import torch
    from torch.utils import benchmark

    timer = benchmark.Timer(
        stmt="fn()", globals={"fn": fn}, label=label, num_threads=threads or torch.get_num_threads()
    )
    return timer.blocked_autorange(min_run_time=min_run_time)


def profile_call(
    fn: Callable[[], Any], trace_path: str | Path | None = None, *, top: int = 10, sort_by: str = "self_cpu_time_total"
) -> tuple[str, list[dict[str, Any]]]:
    """Profile one call of ``fn``: the top operators as a table and as rows; optional Chrome trace.

    ``trace_path`` (``.json``) can be opened in Perfetto or ``chrome://tracing``.
    On a GPU, CUDA activity is recorded too and ``sort_by="self_cuda_time_total"``
    is usually what you want.
    """
    import os

    import torch
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # Kineto's start/stop lines on stderr are not for students
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    fn()  # warm-up outside the profile, as Timer does
    with profile(activities=activities, record_shapes=True) as prof:
        fn()
    averages = prof.key_averages()
    table = averages.table(sort_by=sort_by, row_limit=top)
    key = sort_by.replace("_total", "")
    rows = sorted(
        (
            {
                "op": event.key,
                "calls": event.count,
                "self_cpu_ms": event.self_cpu_time_total / 1000,
                "cpu_total_ms": event.cpu_time_total / 1000,
            }
            for event in averages
        ),
        key=lambda row: -row["self_cpu_ms"] if key.startswith("self_cpu") else -row["cpu_total_ms"],
    )[:top]
    if trace_path is not None:
        trace_path = Path(trace_path)
        try:
            trace_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CourseError(f"cannot write the trace to {trace_path}: {error.strerror}") from None
        prof.export_chrome_trace(str(trace_path))
    return table, rows


def machine_snapshot() -> dict[str, Any]:
    """CPU and memory (psutil), and GPU memory/utilisation (NVML, else nvidia-smi), as a dict."""
    import psutil

    memory = psutil.virtual_memory()
    facts: dict[str, Any] = {
        "cpu_count": psutil.cpu_count(),
        "cpu_percent": psutil.cpu_percent(interval=0.2),
        "load_average": list(psutil.getloadavg()),
        "memory_total_gb": memory.total / 2**30,
        "memory_available_gb": memory.available / 2**30,
        "process_rss_mb": psutil.Process().memory_info().rss / 2**20,
        "gpus": [],
        "gpu_source": "none",
    }
    facts["gpus"], facts["gpu_source"] = _gpus_nvml()
    if facts["gpu_source"] == "none":
        facts["gpus"], facts["gpu_source"] = _gpus_nvidia_smi()
    return facts


def _gpus_nvml() -> tuple[list[dict[str, Any]], str]:
    """GPU rows through NVML (the library nvidia-smi uses); empty when there is no driver."""
    try:
        import pynvml
    except ImportError:
        return [], "none"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver / no GPU: the usual case on a laptop
        return [], "none"
    try:
        rows = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            utilisation = pynvml.nvmlDeviceGetUtilizationRates(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            rows.append(
                {
                    "index": index,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "memory_used_mb": memory.used / 2**20,
                    "memory_total_mb": memory.total / 2**20,
                    "utilization_percent": utilisation.gpu,
                }
            )
        return rows, "nvml"
    finally:
        pynvml.nvmlShutdown()


def _gpus_nvidia_smi() -> tuple[list[dict[str, Any]], str]:
    """GPU rows from ``nvidia-smi --query-gpu`` when NVML's Python binding is missing."""
    if shutil.which("nvidia-smi") is None:
        return [], "none"
    query = "index,name,memory.used,memory.total,utilization.gpu"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return [], "none"
    rows = []
    for line in out.strip().splitlines():
        index, name, used, total, util = (part.strip() for part in line.split(","))
        rows.append(
            {
                "index": int(index),
                "name": name,
                "memory_used_mb": float(used),
                "memory_total_mb": float(total),
                "utilization_percent": float(util),
            }
        )
    return rows, "nvidia-smi"
