"""Out of GPU memory while serving: free the cache, retry with a smaller batch.

Training fails loudly on out-of-memory and you lower the batch size once.
A server cannot: one unusually long batch (32 texts of 512 tokens) may not
fit where the usual ones do, and the requests in it must still get answers.
:func:`run_with_backoff` catches the error, gives the allocator's cached
blocks back (``torch.cuda.empty_cache()``), splits the batch in two halves
and runs each; only a *single* item that does not fit fails, and only for its
own caller::

    [a b c d e f g h]  -> OutOfMemoryError
    [a b c d] [e f g h] -> ok, ok          (results joined in the original order)

A cap keeps one process from taking the whole GPU (several model servers or
students can share one):  :func:`cap_gpu_memory` calls
``torch.cuda.set_per_process_memory_fraction``; past the cap PyTorch raises
the same ``torch.OutOfMemoryError``, so the recovery above applies.

On a CPU machine the path is exercised by simulation: a ``run_batch`` that
raises ``torch.OutOfMemoryError`` above some batch size (see the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from course.errors import CourseError


def _is_oom(error: BaseException) -> bool:
    """CUDA's ``torch.OutOfMemoryError`` or the CPU allocator's out-of-memory RuntimeError."""
    from course.memory import is_out_of_memory

    return isinstance(error, MemoryError) or is_out_of_memory(error)


def free_cached_memory() -> None:
    """Give the CUDA caching allocator's unused blocks back (no-op without a GPU)."""
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_backoff(
    run_batch: Callable[[list[Any]], Sequence[Any]],
    items: list[Any],
    *,
    on_retry: Callable[[int], None] | None = None,
) -> list[Any]:
    """``run_batch(items)``, halving the batch after each out-of-memory error.

    ``on_retry(size)`` is called with the size of the batch that failed
    (metrics, logs).  A single item that still runs out of memory re-raises.
    """
    try:
        return list(run_batch(items))
    except (RuntimeError, MemoryError) as error:
        if not _is_oom(error) or len(items) == 1:
            raise
    free_cached_memory()  # outside the except block: the traceback no longer pins the failed tensors
    if on_retry is not None:
        on_retry(len(items))
    middle = len(items) // 2
    return run_with_backoff(run_batch, items[:middle], on_retry=on_retry) + run_with_backoff(
        run_batch, items[middle:], on_retry=on_retry
    )


def cap_gpu_memory(fraction: float, device: Any = None) -> str:
    """Limit this process to ``fraction`` of the GPU's memory; return what was done.

    Without a GPU there is nothing to cap: the sentence says so.  Past the
    cap, allocations raise ``torch.OutOfMemoryError`` exactly like a full GPU.
    """
    import torch

    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise CourseError(f"memory fraction must be in (0, 1], got {fraction!r}")
    if not torch.cuda.is_available():
        return "no CUDA GPU: nothing to cap (the CPU has no per-process allocator limit in torch)"
    device = torch.device(device or "cuda:0")
    torch.cuda.set_per_process_memory_fraction(float(fraction), device)
    total = torch.cuda.get_device_properties(device).total_memory
    return f"{device}: capped at {fraction:.0%} of {total / 2**30:.1f} GiB = {fraction * total / 2**30:.1f} GiB"
