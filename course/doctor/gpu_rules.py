"""Rules about the GPU stack: torch's build, the driver, architectures, environment.

Each ``check_*`` takes the facts and returns a list of findings (usually
empty).  They are pure functions, so a test can feed them a hand-written
dict describing a broken machine that no CI runner has.
"""

from __future__ import annotations

from course.doctor.cuda import (
    arch_runs_on,
    capability_code,
    driver_requirement,
    pip_torch,
    suggest_build,
    version_tuple,
)
from course.doctor.finding import Facts, Finding, gpu_names, gpus_of, section
from course.doctor.tables import TORCH_BUILD_ARCHES


def check_torch_import(facts: Facts) -> list[Finding]:
    """torch missing, or failing to import (often 'undefined symbol')."""
    torch = section(facts, "torch")
    if torch.get("installed") is False:
        return [
            Finding(
                "torch-missing",
                "error",
                f"torch is not installed in this Python ({section(facts, 'python').get('executable', '?')}).",
                "Install it here (`pip install torch`, see docs/doctor.md for the CUDA build to pick) "
                "or switch the notebook to the kernel of the environment that has it.",
            )
        ]
    error = torch.get("import_error")
    if not error:
        return []
    if "undefined symbol" in error:
        shadowing = [entry["dir"] for entry in section(facts, "env").get("ld_cuda_dirs") or []]
        because = (
            f"LD_LIBRARY_PATH puts CUDA libraries from {', '.join(shadowing)} ahead of the ones torch ships with"
            if shadowing
            else "a library or extension was built for a different torch or CUDA version"
        )
        return [
            Finding(
                "torch-undefined-symbol",
                "error",
                f"import torch fails with an undefined symbol ({error}): {because}.",
                "Remove system CUDA folders from LD_LIBRARY_PATH (keep only the driver's), or reinstall the "
                "extension named in the error against this torch; then restart Python.",
            )
        ]
    return [
        Finding(
            "torch-import-failed",
            "error",
            f"torch is installed but import torch fails: {error}.",
            "Reinstall it in this environment (`pip install --force-reinstall torch==<version>` with the "
            "index URL of your build) and restart Python.",
        )
    ]


def check_gpu(facts: Facts) -> list[Finding]:
    """Is there a GPU, does torch see it, and is torch built to use it?"""
    torch, driver, gpus = section(facts, "torch"), section(facts, "driver"), gpus_of(facts)
    if not torch.get("version"):
        return []  # torch missing or broken: check_torch_import explains
    findings = []
    if driver.get("error"):
        findings.append(
            Finding(
                "nvidia-smi-failed",
                "warning",
                f"nvidia-smi is installed but failed ({driver['error']}): the NVIDIA driver is not loaded "
                "or does not match its user-space libraries (common right after a driver update).",
                "Reboot (or reload the nvidia kernel module); in a container, start it with `--gpus all`.",
            )
        )
    if torch.get("cuda_available"):
        devices = torch.get("devices") or []
        names = ", ".join(f"cuda:{d.get('index')} {d.get('name')}" for d in devices)
        findings.append(
            Finding("gpu-ready", "info", f"torch {torch['version']} sees {len(devices)} GPU(s): {names}.", "None.")
        )
    elif torch.get("mps_available"):
        findings.append(Finding("mps-ready", "info", "torch can use the Apple GPU (device 'mps').", "None."))
    elif not gpus:
        findings.append(
            Finding(
                "no-gpu",
                "info",
                "No GPU is visible: torch.cuda.is_available() is False and no NVIDIA driver reported a GPU.",
                "Nothing to fix for the quick CPU profile: every lesson runs on the CPU, only slower. "
                "For the GPU parts, use the course's GPU JupyterHub image or a machine with an NVIDIA GPU.",
            )
        )
    elif torch.get("build") == "cpu":
        capability = gpus[0].get("compute_capability")
        fitting = suggest_build(capability_code(capability) if capability else None, driver.get("version"))
        cuda = fitting or max(TORCH_BUILD_ARCHES, key=version_tuple)
        first = "" if fitting else f"Upgrade the NVIDIA driver to {driver_requirement(cuda)[0]} or newer, then install"
        findings.append(
            Finding(
                "cpu-torch-on-gpu-machine",
                "warning",
                f"The driver reports {len(gpus)} GPU(s) ({gpu_names(gpus)}), but torch {torch['version']} is "
                "the CPU-only build (torch.version.cuda is None), so everything runs on the CPU.",
                f"{first or 'Install'} the CUDA build: `{pip_torch(torch['version'], cuda)}`, then restart the kernel.",
            )
        )
    elif not (_driver_too_old(facts) or _visible_devices_problem(facts)):
        findings.append(
            Finding(
                "cuda-unavailable",
                "error",
                f"torch {torch['version']} is a CUDA {torch.get('cuda')} build and the driver reports "
                f"{len(gpus)} GPU(s), but torch.cuda.is_available() is False.",
                "Check that this process may open /dev/nvidia* (Docker: `--gpus all`), that "
                "CUDA_VISIBLE_DEVICES does not hide the GPUs, and reboot after a driver update; then restart Python.",
            )
        )
    return findings


def _driver_too_old(facts: Facts) -> bool:
    """True when check_driver already explains why CUDA is unavailable."""
    return any(finding.id == "driver-too-old" for finding in check_driver(facts))


def check_driver(facts: Facts) -> list[Finding]:
    """The driver must be new enough for the CUDA version torch was built with."""
    torch, driver = section(facts, "torch"), section(facts, "driver")
    cuda, have = torch.get("cuda"), driver.get("version")
    if not cuda or not have:
        return []
    native, compat = driver_requirement(cuda)
    gpus = gpus_of(facts)
    capability = gpus[0].get("compute_capability") if gpus else None
    build = suggest_build(capability_code(capability) if capability else None, have)
    other_build = ""
    if build and build != ".".join(cuda.split(".")[:2]):
        other_build = f", or install torch built for CUDA {build}: `{pip_torch(torch.get('version'), build)}`"
    if compat and version_tuple(have) < version_tuple(compat):
        return [
            Finding(
                "driver-too-old",
                "error",
                f"The NVIDIA driver is {have}, but torch {torch.get('version')} is built with CUDA {cuda}, which "
                f"needs at least {compat} ({native} for full support): CUDA reports 'the NVIDIA driver on "
                "your system is too old' and torch.cuda.is_available() is False.",
                f"Upgrade the driver to {native} or newer{other_build}.",
            )
        ]
    if native and version_tuple(have) < version_tuple(native):
        return [
            Finding(
                "driver-minor-compat",
                "warning",
                f"Driver {have} is older than {native}, the native driver for CUDA {cuda}. torch runs through "
                "CUDA minor-version compatibility, which has no PTX JIT: torch.compile/Triton kernels fail "
                "('PTX was compiled with an unsupported toolchain').",
                f"Upgrade the driver to {native} or newer{other_build}.",
            )
        ]
    return []


def check_arch(facts: Facts) -> list[Finding]:
    """Every GPU's compute capability must be covered by torch's arch list."""
    torch = section(facts, "torch")
    arch_list = torch.get("arch_list") or []
    if torch.get("build") != "cuda" or not arch_list:
        return []
    gpus = torch.get("devices") or gpus_of(facts)
    findings, seen = [], set()
    for gpu in gpus:
        capability = gpu.get("compute_capability")
        if not capability or (gpu.get("name"), capability) in seen:
            continue
        seen.add((gpu.get("name"), capability))
        code = capability_code(capability)
        if any(arch_runs_on(arch, code) for arch in arch_list):
            continue
        build = suggest_build(code)
        fix = (
            f"Install a torch whose arch list includes sm_{code}: `{pip_torch(torch.get('version'), build)}`."
            if build
            else f"No PyTorch 2.8 wheel has sm_{code} kernels: use an older PyTorch that still supports this "
            f"GPU, or build torch from source with TORCH_CUDA_ARCH_LIST={capability}."
        )
        findings.append(
            Finding(
                "arch-not-supported",
                "error",
                f"GPU {gpu.get('index')} ({gpu.get('name')}) has compute capability {capability} (sm_{code}), but "
                f"this torch (CUDA {torch.get('cuda')}) has kernels only for {' '.join(arch_list)}: GPU "
                "operations fail with 'no kernel image is available for execution on the device'.",
                fix,
            )
        )
    return findings


def _visible_devices_problem(facts: Facts) -> bool:
    """True when CUDA_VISIBLE_DEVICES already explains why torch sees no GPU."""
    return bool(check_visible_devices(facts))


def check_visible_devices(facts: Facts) -> list[Finding]:
    """CUDA_VISIBLE_DEVICES must name GPUs that exist (it also renumbers them)."""
    value = section(facts, "env").get("CUDA_VISIBLE_DEVICES")
    driver = section(facts, "driver")
    physical = len(gpus_of(facts))
    if value is None or driver.get("error") or physical == 0:
        return []  # unset, or no driver to compare with
    if value.strip() in ("", "-1"):
        return [
            Finding(
                "gpus-hidden",
                "warning",
                f"CUDA_VISIBLE_DEVICES={value!r} hides all {physical} GPU(s) the driver reports, so torch sees none.",
                "Unset it (`unset CUDA_VISIBLE_DEVICES`), or list the GPUs to use, e.g. CUDA_VISIBLE_DEVICES=0; "
                "in a notebook set it before importing torch.",
            )
        ]
    visible = 0
    for entry in (part.strip() for part in value.split(",")):
        if entry.startswith(("GPU-", "MIG-")) or (entry.isdigit() and int(entry) < physical):
            visible += 1
            continue
        return [
            Finding(
                "cuda-visible-devices-invalid",
                "error",
                f"CUDA_VISIBLE_DEVICES={value} names device {entry!r}, but the driver reports {physical} GPU(s) "
                f"(0..{physical - 1}). CUDA stops reading the list there, so torch sees {visible} GPU(s), and "
                f"cuda:{visible} or above raises 'invalid device ordinal'.",
                f"Use indices 0..{physical - 1} or unset the variable. It renumbers: with "
                "CUDA_VISIBLE_DEVICES=1 that GPU is cuda:0 inside Python.",
            )
        ]
    return []


def check_ld_library_path(facts: Facts) -> list[Finding]:
    """System CUDA libraries on LD_LIBRARY_PATH shadow the ones pip installed for torch."""
    torch, env = section(facts, "torch"), section(facts, "env")
    dirs = env.get("ld_cuda_dirs") or []
    bundled = torch.get("bundled_cuda_libs")
    if not dirs or torch.get("build") != "cuda" or (bundled is not None and not bundled):
        return []  # nothing found, CPU torch, or a torch that *relies* on a system CUDA
    listing = "; ".join(f"{entry['dir']} ({', '.join(entry.get('libs', [])[:3])})" for entry in dirs)
    return [
        Finding(
            "ld-library-path-cuda",
            "warning",
            f"LD_LIBRARY_PATH puts a system CUDA ahead of the libraries bundled with torch: {listing}. The loader "
            "searches LD_LIBRARY_PATH first, so torch can load a cuBLAS/cuDNN/NCCL of another version "
            "('undefined symbol', CUBLAS_STATUS_* errors).",
            "Drop those folders from LD_LIBRARY_PATH for Python (keep the driver's, e.g. /usr/local/nvidia/lib64); "
            "torch finds its own CUDA libraries without help.",
        )
    ]
