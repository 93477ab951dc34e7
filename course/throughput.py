"""How fast is this device?  Matrix-multiply throughput in TFLOP/s.

A matmul of two ``n x n`` matrices does ``n`` multiplies and ``n`` adds for
each of the ``n**2`` outputs: ``2 * n**3`` floating-point operations.
Dividing by the time it took gives FLOP/s, the number GPU spec sheets quote.

GPUs run asynchronously: ``a @ b`` returns before the work is done, so we
must ``torch.cuda.synchronize()`` before reading the clock, and do warm-up
calls first (the first call pays for kernel selection, memory allocation and
waking the CPU's threads up).

One timing is one sample of a noisy process (other programs, the CPU's clock
speed, the GPU's boost), so every size is timed ``repeats`` times and reported
as the **median** with its **spread** (slowest and fastest run): a curve whose
spread is as large as its steps says "noise", not "the hardware does this".
"""

from __future__ import annotations

import statistics
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


def matmul_samples(
    n: int, device: str | torch.device = "cpu", dtype: str = "float32", repeats: int = 5, warmup: int = 2
) -> list[float]:
    """TFLOP/s of ``repeats`` timed ``n x n`` matmuls on ``device``, after ``warmup`` untimed ones."""
    import torch

    if n < 1 or repeats < 1 or warmup < 0:
        raise CourseError(f"matrix size and repeats must be positive, got n={n}, repeats={repeats}, warmup={warmup}")
    device = torch.device(device)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise CourseError(f"unknown dtype '{dtype}': use float32, float16 or bfloat16")
    a = torch.randn(n, n, device=device, dtype=torch_dtype)
    b = torch.randn(n, n, device=device, dtype=torch_dtype)
    for _ in range(warmup):  # kernel selection, allocations, threads waking up
        a @ b
    _synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        _synchronize(device)
        samples.append(matmul_flops(n) / (time.perf_counter() - start) / 1e12)
    return samples


def matmul_tflops(n: int, device: str | torch.device = "cpu", dtype: str = "float32", repeats: int = 5) -> float:
    """Median matmul throughput in TFLOP/s for size ``n`` on ``device`` (see :func:`matmul_samples`)."""
    return statistics.median(matmul_samples(n, device, dtype, repeats))


def matmul_sweep(
    sizes: Iterable[int], devices: Iterable[str | torch.device], dtype: str = "float32", repeats: int = 5
) -> list[dict[str, Any]]:
    """Throughput for every (device, size): rows with device, n, dtype, and TFLOP/s as median, min and max."""
    rows = []
    for device in devices:
        for n in sizes:
            samples = matmul_samples(n, device, dtype, repeats)
            rows.append(
                {
                    "device": str(device),
                    "n": n,
                    "dtype": dtype,
                    "tflops": statistics.median(samples),
                    "tflops_min": min(samples),
                    "tflops_max": max(samples),
                    "repeats": repeats,
                }
            )
    return rows


def plot_sweep(rows: list[dict[str, Any]]) -> Figure:
    """Median TFLOP/s against matrix size, one line per device and dtype, the min-max spread shaded."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in sorted({(row["device"], row["dtype"]) for row in rows}):
        mine = sorted((row for row in rows if (row["device"], row["dtype"]) == key), key=lambda row: row["n"])
        sizes = [row["n"] for row in mine]
        (line,) = ax.plot(sizes, [row["tflops"] for row in mine], marker="o", label=f"{key[0]} {key[1]} (median)")
        low = [row.get("tflops_min", row["tflops"]) for row in mine]
        high = [row.get("tflops_max", row["tflops"]) for row in mine]
        ax.fill_between(sizes, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("matrix size n (n x n @ n x n)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title("Matrix-multiply throughput (shaded: slowest to fastest run)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
