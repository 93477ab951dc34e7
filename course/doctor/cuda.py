"""What CUDA needs: driver versions, GPU architectures, and which torch build fits.

Pure functions over version strings, so they are easy to read and to test.
The numbers themselves live in ``tables.py``.
"""

from __future__ import annotations

import re

from course.doctor.tables import CUDA_COMPAT_DRIVER, CUDA_NATIVE_DRIVER, IGPU_CAPABILITIES, TORCH_BUILD_ARCHES

TORCH_INDEX = "https://download.pytorch.org/whl"


def version_tuple(text: str) -> tuple[int, ...]:
    """Version text to numbers, "570.86.15" -> (570, 86, 15), so versions compare as numbers."""
    return tuple(int(part) for part in re.findall(r"\d+", text))


def capability_code(text: str) -> int:
    """Compute capability "8.6" -> 86, the number in ``sm_86``."""
    major, minor = text.split(".")[:2]
    return int(major) * 10 + int(minor)


def arch_runs_on(arch: str, capability: int) -> bool:
    """Can code compiled for ``arch`` (an entry of torch's arch list) run on this GPU?

    - ``sm_80`` machine code runs on the same major generation from that minor
      up: 8.0, 8.6, 8.9 - but never on 9.0 and never on 7.5;
    - ``sm_90a`` (arch-specific features) runs only on exactly 9.0;
    - ``compute_90`` is PTX, compiled by the driver for any GPU >= 9.0;
    - embedded Jetson GPUs (sm_53, sm_87, ...) only run their own code.
    """
    match = re.fullmatch(r"(sm|compute)_(\d+)([a-z]?)", arch)
    if match is None:
        return False
    kind, code, suffix = match.group(1), int(match.group(2)), match.group(3)
    if kind == "compute":
        return capability >= code
    if suffix == "a" or code in IGPU_CAPABILITIES or capability in IGPU_CAPABILITIES:
        return capability == code
    return capability // 10 == code // 10 and capability >= code


def driver_requirement(cuda: str) -> tuple[str | None, str | None]:
    """(native, minor-version-compatible) minimum drivers for a CUDA version like "12.8"."""
    major = cuda.split(".")[0]
    native = CUDA_NATIVE_DRIVER.get(".".join(cuda.split(".")[:2]))
    if native is None:  # a release missing from the table: use the nearest older one
        older = [v for v in CUDA_NATIVE_DRIVER if v.split(".")[0] == major and version_tuple(v) <= version_tuple(cuda)]
        native = CUDA_NATIVE_DRIVER[max(older, key=version_tuple)] if older else None
    return native, CUDA_COMPAT_DRIVER.get(int(major)) if major.isdigit() else None


def suggest_build(capability: int | None = None, driver: str | None = None) -> str | None:
    """The newest CUDA build of PyTorch with kernels for this GPU that this driver runs natively."""
    for cuda in sorted(TORCH_BUILD_ARCHES, key=version_tuple, reverse=True):
        if capability is not None and not any(arch_runs_on(f"sm_{a}", capability) for a in TORCH_BUILD_ARCHES[cuda]):
            continue
        native, _ = driver_requirement(cuda)
        if driver and native and version_tuple(driver) < version_tuple(native):
            continue
        return cuda
    return None


def pip_torch(torch_version: str | None, cuda: str) -> str:
    """The pip command that swaps torch for the same version built with ``cuda``."""
    pinned = f"torch=={torch_version.split('+')[0]}" if torch_version else "torch"
    tag = "cu" + cuda.replace(".", "")
    return f"pip install --force-reinstall {pinned} --index-url {TORCH_INDEX}/{tag}"
