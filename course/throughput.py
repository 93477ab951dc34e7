"""How fast is this device?  Matrix-multiply throughput in TFLOP/s.

A matmul of two ``n x n`` matrices does ``n`` multiplies and ``n`` adds for
each of the ``n**2`` outputs: ``2 * n**3`` floating-point operations.
Dividing by the time it took gives FLOP/s, the number GPU spec sheets quote.

GPUs run asynchronously: ``a @ b`` returns before the work is done, so we
must ``torch.cuda.synchronize()`` before reading the clock, and do a warm-up
call first (the first call pays for kernel selection and memory allocation).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure


def matmul_flops(n: int) -> int:
    """Floating-point operations in one ``n x n`` by ``n x n`` matmul."""
    return 2 * n**3


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so the clock measures the work, not the launch."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_tflops(n: int, device: str | torch.device = "cpu", dtype: str = "float32", repeats: int = 3) -> float:
    """Best-of-``repeats`` matmul throughput in TFLOP/s for size ``n`` on ``device``."""
    import torch

    if n < 1 or repeats < 1:
        raise CourseError(f"matrix size and repeats must be positive, got n={n}, repeats={repeats}")
    device = torch.device(device)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise CourseError(f"unknown dtype '{dtype}': use float32, float16 or bfloat16")
    a = torch.randn(n, n, device=device, dtype=torch_dtype)
    b = torch.randn(n, n, device=device, dtype=torch_dtype)
    a @ b  # warm-up: kernel selection, allocations
    _synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return matmul_flops(n) / best / 1e12


def matmul_sweep(
    sizes: Iterable[int], devices: Iterable[str | torch.device], dtype: str = "float32", repeats: int = 3
) -> list[dict[str, Any]]:
    """Throughput for every (device, size): rows with device, n, dtype, tflops."""
    return [
        {"device": str(device), "n": n, "dtype": dtype, "tflops": matmul_tflops(n, device, dtype, repeats)}
        for device in devices
        for n in sizes
    ]


def plot_sweep(rows: list[dict[str, Any]]) -> Figure:
    """TFLOP/s against matrix size, one line per device and dtype (log-scaled x)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in sorted({(row["device"], row["dtype"]) for row in rows}):
        points = [(row["n"], row["tflops"]) for row in rows if (row["device"], row["dtype"]) == key]
        ax.plot(*zip(*points, strict=True), marker="o", label=f"{key[0]} {key[1]}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("matrix size n (n x n @ n x n)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title("Matrix-multiply throughput")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
