"""Mixed precision: run the matrix multiplies in 16 bits, keep the weights in 32.

The idiom comes from nanoGPT::

    ctx = nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
    with ctx:
        loss = model(**batch).loss
    scaler.scale(loss).backward()

* ``torch.autocast`` picks, op by op, the lower precision where it is safe
  (matmuls, attention) and float32 where it is not (softmax sums, the loss).
* **bfloat16** has float32's exponent range, so gradients cannot underflow:
  no scaler needed.  Ampere (A100, RTX 30xx) and newer GPUs run it fast.
* **float16** has a narrow range: small gradients flush to zero.  The
  ``GradScaler`` multiplies the loss by a large factor before ``backward``
  and divides the gradients back before the optimizer step, skipping steps
  whose gradients overflowed.  Use it on older GPUs (V100, T4).
* On a **CPU**, autocast to bfloat16 works everywhere but is only faster on
  CPUs with bf16 units (AVX-512 BF16 or AMX: recent Xeons).  Elsewhere it is
  *slower* than float32, so the CPU default is float32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from course.errors import CourseError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    """The chosen precision: ``name`` (fp32/bf16/fp16), its torch dtype (None = fp32) and why."""

    name: str
    dtype: torch.dtype | None
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


@lru_cache(maxsize=1)
def cpu_has_bf16_units() -> bool:
    """True when the CPU advertises bfloat16 instructions (avx512_bf16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:  # not Linux: assume no bf16 units
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def cuda_bf16_support(device: torch.device | str = "cuda") -> tuple[str, tuple[int, int]]:
    """How a CUDA GPU runs bfloat16: ``("native" | "emulated" | "none", (major, minor))``.

    Native bf16 needs compute capability >= 8.0 (Ampere: A100, RTX 30xx, and
    newer).  Do not ask ``torch.cuda.is_bf16_supported()`` alone: its default
    ``including_emulation=True`` also says True on a T4 (7.5) or V100 (7.0),
    where bf16 tensors can be created but the arithmetic is emulated, slower
    than float16.
    """
    import torch

    device = torch.device(device)
    major, minor = torch.cuda.get_device_capability(device if device.index is not None else None)
    if major >= 8:
        return "native", (major, minor)
    if torch.cuda.is_bf16_supported(including_emulation=True):
        return "emulated", (major, minor)
    return "none", (major, minor)


def choose_precision(requested: str, device: torch.device | str) -> Precision:
    """Resolve ``auto``/``fp32``/``bf16``/``fp16`` for a device, explaining the choice.

    ``auto``: bf16 on a GPU that runs it natively (compute capability >= 8.0),
    fp16 with a GradScaler on older GPUs, fp32 elsewhere.
    ``fp16`` needs a CUDA GPU (its GradScaler is CUDA only here).
    """
    import torch

    device = torch.device(device)
    if requested not in PRECISIONS:
        raise CourseError(f"unknown precision '{requested}': use {', '.join(PRECISIONS)}")
    on_cuda = device.type == "cuda"
    bf16, capability = cuda_bf16_support(device) if on_cuda else ("none", (0, 0))
    where = "compute capability {}.{}".format(*capability)
    if requested == "auto":
        if bf16 == "native":
            return Precision("bf16", torch.bfloat16, f"auto: this GPU ({where}) runs bfloat16 natively")
        if on_cuda:
            why = "has no native bf16" + (" (torch can only emulate it, slowly)" if bf16 == "emulated" else "")
            slow = "; it saves memory, but float16 tensor cores need >= 7.0" if capability < (7, 0) else ""
            return Precision("fp16", torch.float16, f"auto: this GPU ({where}) {why}: float16 with a GradScaler{slow}")
        return Precision("fp32", None, f"auto: float32 on {device.type} (bf16 is optional and often slower there)")
    if requested == "fp32":
        return Precision("fp32", None, "requested")
    if requested == "fp16":
        if not on_cuda:
            raise CourseError(f"precision fp16 needs a CUDA GPU, the device is {device}: use bf16 or fp32")
        return Precision("fp16", torch.float16, "requested, with a GradScaler")
    if device.type == "cpu":
        speed = "this CPU has bf16 units" if cpu_has_bf16_units() else "SLOWER here: this CPU has no bf16 units"
        return Precision("bf16", torch.bfloat16, f"requested on CPU; {speed}")
    if bf16 == "none":
        raise CourseError(f"this GPU ({where}) cannot run bf16 (native needs compute capability >= 8.0): use fp16")
    if bf16 == "emulated":
        return Precision("bf16", torch.bfloat16, f"requested; EMULATED on {where} (slower than fp16: use fp16 here)")
    if on_cuda:
        return Precision("bf16", torch.bfloat16, f"requested; native on {where}")
    return Precision("bf16", torch.bfloat16, "requested")


def autocast_context(device: torch.device | str, precision: Precision) -> AbstractContextManager:
    """``torch.autocast`` for 16-bit precisions, a do-nothing context for fp32."""
    import torch

    if precision.dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=precision.dtype)


def grad_scaler(device: torch.device | str, precision: Precision) -> torch.amp.GradScaler:
    """A GradScaler that is active only for float16 (a pass-through otherwise)."""
    import torch

    device = torch.device(device)
    enabled = precision.dtype == torch.float16
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)
