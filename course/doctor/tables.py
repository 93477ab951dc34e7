"""The numbers the doctor checks against: drivers, GPU architectures, tested ranges.

They live apart from the checks so that a new CUDA release or a new tested
version range is a one-line edit here (and in docs/doctor.md), never a change
to the logic in ``findings.py``.
"""

from __future__ import annotations

#: Native minimum Linux driver for each CUDA version a torch wheel is built with.
#: "Native" means every feature works, including the driver's PTX JIT compiler.
#: Source: the CUDA Toolkit release notes (driver shipped with each release).
CUDA_NATIVE_DRIVER: dict[str, str] = {
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.35.05",  # 12.6 Update 3, the one torch's cu126 wheels use
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}

#: Oldest driver that runs *any* release of a CUDA major version, thanks to
#: "minor-version compatibility": the program starts, but without PTX JIT, so
#: kernels compiled on the fly (Triton, torch.compile, PTX-only GPUs) fail.
CUDA_COMPAT_DRIVER: dict[int, str] = {
    11: "450.80.02",
    12: "525.60.13",
    13: "580",
}

#: GPU architectures in the stable PyTorch 2.8 Linux x86_64 wheels, written
#: as compute capability * 10 (sm_86 -> 86).  Used to suggest a build that
#: has kernels for a given GPU.  (The cu129 wheels are experimental in 2.8,
#: so the doctor never suggests them.)
TORCH_BUILD_ARCHES: dict[str, tuple[int, ...]] = {
    "12.6": (50, 60, 70, 75, 80, 86, 90),
    "12.8": (70, 75, 80, 86, 90, 100, 120),
}

#: Embedded (Jetson) GPUs: their code runs only on exactly that chip.
IGPU_CAPABILITIES: frozenset[int] = frozenset({53, 62, 72, 87, 101})

#: The packages whose versions the doctor reports, in the order it shows them.
KEY_PACKAGES: tuple[str, ...] = (
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "tokenizers",
    "huggingface-hub",
    "jupyterlab",
    "ipywidgets",
    "nbgrader",
    "papermill",
    "matplotlib",
)

#: Packages the lessons cannot run without: missing is an error, not a warning.
CORE_PACKAGES: frozenset[str] = frozenset({"torch", "transformers", "tokenizers", "huggingface-hub"})

#: Tested ranges used when the ``course`` distribution is not installed (for
#: example when running from a source checkout without ``pip install -e .``).
#: The installed package's own metadata wins whenever it is available.
FALLBACK_TESTED_RANGES: dict[str, str] = {
    "torch": ">=2.8,<2.15",
    "transformers": ">=5.0,<6",
    "accelerate": ">=1.10,<2",
    "datasets": ">=3.0,<6",
    "tokenizers": ">=0.22,<0.24",
    "huggingface-hub": ">=1.0,<3",
    "jupyterlab": ">=4.4,<5",
    "ipywidgets": ">=8.1,<9",
    "nbgrader": ">=0.9.6,<0.10",
    "papermill": ">=2.6,<3",
    "matplotlib": ">=3.9,<4",
}
FALLBACK_REQUIRES_PYTHON = ">=3.10"

GIB = 2**30
MIB = 2**20

#: Docker gives containers 64 MiB of /dev/shm; DataLoader workers and NCCL
#: pass tensors through it, so we ask for at least this much.
SHM_MIN_BYTES = 1 * GIB
#: Free space under the Hugging Face cache below which we warn / fail.
DISK_WARN_BYTES = 5 * GIB
DISK_ERROR_BYTES = 1 * GIB
