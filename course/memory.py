"""How much memory did a block of code need?  The peak, on a GPU or on the CPU.

Shared by the lessons (02's pipelines, 03's training) and ``course run``, so it
lives below all of them: it imports nothing from a lesson module.

* On a **GPU**, PyTorch's caching allocator counts every tensor:
  ``torch.cuda.reset_peak_memory_stats()`` then
  ``torch.cuda.max_memory_allocated()`` is the exact peak of live tensors
  (weights, gradients, optimizer state, activations).  ``nvidia-smi`` shows
  more: the allocator's cache and the CUDA context.
* On a **CPU** there is no such counter; the closest is the process's
  resident set size (RSS): every page of RAM the process holds, Python and
  the libraries included.  Linux also keeps the high-water mark (``VmHWM``).
  :class:`PeakMemory` samples RSS in a background thread while the block
  runs and trusts ``VmHWM`` when the block set a new record.

Freed memory is not always returned to the system (glibc keeps it for
reuse), so :func:`release_free_memory` trims it before a measurement; without
that, a measurement depends on what ran before it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:
    import torch

MB = 2**20


@lru_cache(maxsize=1)
def _this_process() -> Any:
    """psutil's handle on this process, made once (making it costs more than reading RSS)."""
    import psutil

    return psutil.Process()


def rss_mb() -> float:
    """Current resident memory of this process, in MiB.

    On Linux this reads ``/proc/self/statm`` directly (a few microseconds, so a
    sampling thread barely disturbs training); elsewhere it asks psutil.
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE / MB
    except (OSError, IndexError, ValueError):
        return _this_process().memory_info().rss / MB


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def high_water_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory of a process (default: this one) so far (Linux ``VmHWM``), in MiB; None elsewhere."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def release_free_memory(device: torch.device | str | None = None) -> None:
    """Collect garbage and hand freed memory back (glibc ``malloc_trim``, CUDA cache)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass
    if device is not None:
        import torch

        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()


class PeakMemory:
    """Measure the peak memory of a block of code::

        with PeakMemory(device) as memory:
            train_step()
        print(memory.peak_mb, memory.baseline_mb, memory.source)

    ``baseline_mb`` is the memory in use when the block started, so
    ``peak_mb - baseline_mb`` is what the block itself needed.
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.05) -> None:
        import torch

        self.device = torch.device(device)
        self.interval = interval
        self.baseline_mb = 0.0
        self.peak_mb = 0.0
        self.source = "CUDA max allocated" if self.device.type == "cuda" else "process RSS"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm_before: float | None = None

    @property
    def extra_mb(self) -> float:
        """Memory the block needed on top of what was in use before it."""
        return max(0.0, self.peak_mb - self.baseline_mb)

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mb = torch.cuda.memory_allocated(self.device) / MB
            return self
        self.baseline_mb = self.peak_mb = rss_mb()
        self._hwm_before = high_water_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        """Background thread: remember the largest RSS seen."""
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / MB
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())
        hwm_after = high_water_mb()
        if hwm_after is not None and self._hwm_before is not None and hwm_after > self._hwm_before:
            self.peak_mb = hwm_after  # a new record was set inside the block: VmHWM is exact


#: Phrases of the errors PyTorch raises when an allocation fails on CPU or GPU.
_OOM_PHRASES = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate")


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError`` and the CPU allocator's ``RuntimeError``."""
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(phrase in str(error).lower() for phrase in _OOM_PHRASES)


@contextmanager
def fits_in_memory(what: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Turn an out-of-memory error inside the block into one CourseError line.

    ``what`` names the setting a user can lower, e.g. ``"batch size 64 x max length 256"``.
    The cached GPU memory is freed first so the notebook can go on.
    """
    try:
        yield
    except (RuntimeError, MemoryError) as error:
        if not (isinstance(error, MemoryError) or is_out_of_memory(error)):
            raise
        release_free_memory(device)
        raise CourseError(
            f"{what} does not fit in {device} memory: lower the batch size or max length, "
            "or use gradient accumulation / activation checkpointing"
        ) from None
