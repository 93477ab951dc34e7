"""GPU probes: what torch was built with and sees, and what the NVIDIA driver reports.

The two views differ on purpose.  The driver (nvidia-smi or NVML) lists every
physical GPU and ignores CUDA_VISIBLE_DEVICES; torch lists only the GPUs it
can use, numbered the way ``cuda:N`` numbers them.  Comparing them is how the
doctor finds a CPU-only torch on a GPU machine, or a bad CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from course.doctor.finding import Facts, describe_error
from course.doctor.tables import MIB

NVIDIA_SMI_FIELDS = ("name", "compute_cap", "memory.total", "driver_version")
NVIDIA_SMI_TIMEOUT_S = 20


def attempt(section: Facts, key: str, read: Callable[[], Any], default: Any = None) -> None:
    """Store ``read()`` under ``key``; if it raises, store ``default`` and note why.

    Used for the optional parts of a probe (the cuDNN version, say), so one odd
    attribute does not throw away everything else the probe learned.
    """
    try:
        section[key] = read()
    except Exception as exc:  # any failure is a fact to report
        section[key] = default
        section.setdefault("errors", {})[key] = describe_error(exc)


# ---------------------------------------------------------------------- torch


def _import_torch() -> Any:
    """Import torch.  A separate function so tests can make the import fail."""
    import torch

    return torch


def _cudnn_version(torch: Any) -> str | None:
    """cuDNN as torch loaded it, e.g. 91002 -> "9.10.2" (8902 -> "8.9.2")."""
    raw = torch.backends.cudnn.version() if torch.version.cuda else None
    if not raw:
        return None
    if raw >= 10000:  # cuDNN 9 and later encode major * 10000
        return f"{raw // 10000}.{raw % 10000 // 100}.{raw % 100}"
    return f"{raw // 1000}.{raw % 1000 // 100}.{raw % 100}"


def _nccl_version(torch: Any) -> str | None:
    """NCCL as torch bundles it, e.g. (2, 27, 3) -> "2.27.3"; None on CPU builds."""
    if not torch.version.cuda:
        return None
    version = torch.cuda.nccl.version()
    return ".".join(str(part) for part in version) if isinstance(version, tuple) else str(version)


def _arch_list(torch: Any) -> list[str]:
    """The GPU architectures this torch has kernels for, e.g. ["sm_80", "sm_90"]."""
    if not torch.version.cuda:
        return []
    return list(torch.cuda.get_arch_list())


def _torch_devices(torch: Any) -> list[Facts]:
    """Every GPU torch can see, numbered the way ``cuda:N`` numbers them."""
    devices = []
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        memory = torch.cuda.get_device_properties(index).total_memory
        devices.append(
            {
                "index": index,
                "name": torch.cuda.get_device_name(index),
                "compute_capability": f"{major}.{minor}",
                "memory_mib": int(memory) // MIB,
            }
        )
    return devices


def _mps_available(torch: Any) -> bool:
    """Apple-silicon GPU backend (absent from some builds, hence the getattr)."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def _bundled_cuda_libs() -> list[str]:
    """Names of the pip ``nvidia-*`` library folders next to torch (cublas, cudnn...)."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = set()
    for location in spec.submodule_search_locations:
        found.update(entry.name for entry in Path(location).iterdir() if entry.is_dir() and entry.name != "__pycache__")
    return sorted(found)


def probe_torch() -> Facts:
    """torch's version and build: CUDA or CPU, cuDNN, NCCL, arch list, GPUs it sees.

    A torch that fails to import is a fact too (``import_error``): it is the
    most common symptom of a broken CUDA setup ("undefined symbol").
    """
    if importlib.util.find_spec("torch") is None:
        return {"installed": False}
    try:
        torch = _import_torch()
    except Exception as exc:  # ImportError, OSError, RuntimeError...
        return {"installed": True, "import_error": describe_error(exc)}
    hip = getattr(torch.version, "hip", None)
    facts: Facts = {
        "installed": True,
        "version": torch.__version__,
        "build": "cuda" if torch.version.cuda else ("rocm" if hip else "cpu"),
        "cuda": torch.version.cuda,
        "hip": hip,
        "lib_dir": str(Path(torch.__file__).parent / "lib"),
    }
    attempt(facts, "cudnn", lambda: _cudnn_version(torch))
    attempt(facts, "nccl", lambda: _nccl_version(torch))
    attempt(facts, "arch_list", lambda: _arch_list(torch), default=[])
    attempt(facts, "cuda_available", lambda: bool(torch.cuda.is_available()), default=False)
    facts["devices"] = []
    if facts["cuda_available"]:
        attempt(facts, "devices", lambda: _torch_devices(torch), default=[])
    facts["device_count"] = len(facts["devices"])
    attempt(facts, "mps_available", lambda: _mps_available(torch), default=False)
    attempt(facts, "bundled_cuda_libs", _bundled_cuda_libs, default=[])
    return facts


# --------------------------------------------------------------------- driver


def _mib(text: str) -> int | None:
    """``"81559 MiB"`` -> 81559; ``"[N/A]"`` -> None."""
    number = text.split()[0] if text.split() else ""
    return int(number) if number.isdigit() else None


def _parse_smi_rows(output: str, fields: tuple[str, ...]) -> list[Facts]:
    """Turn nvidia-smi's CSV lines into one dict per GPU."""
    gpus = []
    for index, row in enumerate(csv.reader(output.strip().splitlines(), skipinitialspace=True)):
        values = dict(zip(fields, (cell.strip() for cell in row), strict=False))
        cap = values.get("compute_cap")
        gpus.append(
            {
                "index": index,
                "name": values.get("name"),
                "compute_capability": cap if cap and cap[0].isdigit() else None,
                "memory_mib": _mib(values.get("memory.total", "")),
                "driver_version": values.get("driver_version"),
            }
        )
    return gpus


def _run_smi(smi: str, fields: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """Ask nvidia-smi for one CSV line per GPU (it ignores CUDA_VISIBLE_DEVICES)."""
    command = [smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"]
    return subprocess.run(command, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False)


def _query_nvidia_smi(smi: str) -> Facts:
    """Driver version and GPUs from nvidia-smi, or the error it printed."""
    facts: Facts = {"source": "nvidia-smi", "nvidia_smi": smi, "version": None, "gpus": []}
    fields = NVIDIA_SMI_FIELDS
    try:
        result = _run_smi(smi, fields)
        if result.returncode != 0 and "compute_cap" in result.stdout + result.stderr:
            fields = tuple(field for field in fields if field != "compute_cap")  # drivers before ~510
            result = _run_smi(smi, fields)
    except subprocess.TimeoutExpired:
        facts["error"] = f"nvidia-smi did not answer within {NVIDIA_SMI_TIMEOUT_S} s"
        return facts
    if result.returncode != 0:
        message = (result.stdout + result.stderr).strip().splitlines()
        facts["error"] = f"exit code {result.returncode}: {message[0] if message else 'no output'}"
        return facts
    facts["gpus"] = _parse_smi_rows(result.stdout, fields)
    facts["version"] = next((gpu["driver_version"] for gpu in facts["gpus"] if gpu["driver_version"]), None)
    return facts


def _text(value: Any) -> str:
    """NVML returns bytes in old pynvml releases and str in new ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _query_nvml() -> Facts:
    """The same facts through NVML (the ``pynvml`` module), for images without nvidia-smi."""
    import pynvml

    facts: Facts = {"source": "nvml", "nvidia_smi": None, "version": None, "gpus": []}
    pynvml.nvmlInit()
    try:
        facts["version"] = _text(pynvml.nvmlSystemGetDriverVersion())
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            facts["gpus"].append(
                {
                    "index": index,
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "compute_capability": f"{major}.{minor}",
                    "memory_mib": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // MIB,
                    "driver_version": facts["version"],
                }
            )
    finally:
        pynvml.nvmlShutdown()
    return facts


def probe_driver() -> Facts:
    """The NVIDIA driver and every physical GPU, as the driver (not torch) sees them."""
    smi = shutil.which("nvidia-smi")
    if smi:
        return _query_nvidia_smi(smi)
    if importlib.util.find_spec("pynvml") is not None:
        try:
            return _query_nvml()
        except Exception as error:  # pynvml installed (nvidia-ml-py is a dependency) on a machine without a driver
            if type(error).__name__ not in NO_DRIVER_ERRORS:
                raise
    return {"source": None, "nvidia_smi": None, "version": None, "gpus": []}


#: NVML's ways of saying "there is no NVIDIA driver here": not a probe failure, just no driver.
NO_DRIVER_ERRORS = {"NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded"}
