"""Choose where tensors and models run, and say why.

``torch.device("cuda")`` on a machine without a GPU raises; a transformers 5
pipeline given ``device=0`` silently falls back to the CPU.  Both hide what
happened.  :func:`choose_device` makes the choice explicit: it returns the
device *and* a sentence explaining it, so notebooks can print the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from course.errors import CourseError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DeviceChoice:
    """The device to use and a one-line reason a student can read."""

    device: torch.device
    reason: str

    def __str__(self) -> str:
        return f"{self.device} ({self.reason})"


def _mps_available() -> bool:
    """Apple-silicon GPU backend, guarded because older builds lack the attribute."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def choose_device(requested: str | None = None, *, strict: bool = False) -> DeviceChoice:
    """Pick a device: the requested one if usable, else the best available.

    ``requested`` is ``None``/``"auto"`` (best available: cuda, mps, cpu), or a
    device string such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    A request that cannot be met falls back to the CPU with the reason in the
    result; ``strict=True`` raises :class:`CourseError` instead.
    Unknown device strings always raise.
    """
    import torch

    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return DeviceChoice(torch.device("cuda:0"), f"auto: CUDA GPU {torch.cuda.get_device_name(0)}")
        if _mps_available():
            return DeviceChoice(torch.device("mps"), "auto: Apple GPU (MPS)")
        return DeviceChoice(torch.device("cpu"), "auto: no GPU visible to torch")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise CourseError(f"unknown device '{requested}': use auto, cpu, cuda, cuda:N or mps") from None
    problem = _unusable(device)
    if problem is None:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda:0")
        return DeviceChoice(device, f"requested {requested}")
    if strict:
        raise CourseError(f"device '{requested}' is not usable: {problem}")
    return DeviceChoice(torch.device("cpu"), f"requested {requested}, but {problem}: falling back to cpu")


def _unusable(device: torch.device) -> str | None:
    """Why a device cannot be used here, or None when it can."""
    import torch

    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch sees no CUDA GPU"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"only {count} GPU(s) visible (index {device.index} would be 'invalid device ordinal')"
        return None
    if device.type == "mps":
        return None if _mps_available() else "the MPS backend is not available"
    return f"device type '{device.type}' is not supported by the course"
