"""The shape of a diagnosis: a :class:`Finding`, and the small helpers every rule uses.

A finding has a stable ``id`` (documented in docs/doctor.md, safe to match on
in scripts), a ``severity`` (info / warning / error), a ``cause`` that says
what is wrong and why, and a ``fix`` a student can act on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from course.doctor.tables import GIB, MIB

#: One section of the facts, or all of them: plain JSON data.
Facts = dict[str, Any]
SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    """One thing the doctor noticed: a stable ``id``, how bad it is, why, and the fix."""

    id: str
    severity: str
    cause: str
    fix: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    def to_dict(self) -> dict[str, str]:
        """The JSON shape: ``{"id", "severity", "cause", "fix"}``."""
        return asdict(self)


def exit_code(findings: Iterable[Finding]) -> int:
    """0 when nothing needs attention, 1 for warnings, 2 when anything is an error."""
    severities = {finding.severity for finding in findings}
    return 2 if "error" in severities else 1 if "warning" in severities else 0


def describe_error(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``: short enough for a table cell."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def human_bytes(count: int | None) -> str:
    """1610612736 -> "1.5 GiB"; None -> "unknown"."""
    if count is None:
        return "unknown"
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / MIB:.0f} MiB"


def section(facts: Facts, name: str) -> Facts:
    """A facts section, or {} when it is missing or its probe failed."""
    value = facts.get(name)
    return value if isinstance(value, dict) and "probe_error" not in value else {}


def gpus_of(facts: Facts) -> list[Facts]:
    """Physical GPUs reported by the driver (nvidia-smi / NVML)."""
    return list(section(facts, "driver").get("gpus") or [])


def gpu_names(gpus: list[Facts]) -> str:
    """The GPU names for a sentence, e.g. "2 x NVIDIA H200, NVIDIA L4"."""
    counts = Counter(str(gpu.get("name")) for gpu in gpus)
    return ", ".join(name if n == 1 else f"{n} x {name}" for name, n in counts.items())
