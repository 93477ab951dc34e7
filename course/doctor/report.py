"""Showing a diagnosis: readable text for a terminal, JSON for tools, HTML for Jupyter.

All three views come from the same :class:`Report`.  The facts are turned into
short ``(label, value)`` rows first, so text and HTML say the same thing.
Every row builder is guarded: a fact with an odd shape shows up as
"could not show", it never breaks the report.
"""

from __future__ import annotations

import html
import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from course.doctor.finding import SEVERITIES, Facts, Finding, exit_code, human_bytes, section

Row = tuple[str, str]
BADGE_COLOURS = {"error": "#c0392b", "warning": "#b9770e", "info": "#2e86c1"}


# ---------------------------------------------------------------- fact rows


def _python_rows(facts: Facts) -> list[Row]:
    python = section(facts, "python")
    return [("Python", f"{python['version']} ({python['implementation']}) {python['executable']}")]


def _torch_rows(facts: Facts) -> list[Row]:
    torch = section(facts, "torch")
    if torch.get("installed") is False:
        return [("torch", "not installed")]
    if torch.get("import_error"):
        return [("torch", f"installed, import fails: {torch['import_error']}")]
    build = {"cuda": f"CUDA {torch.get('cuda')}", "rocm": f"ROCm {torch.get('hip')}"}.get(torch.get("build"), "CPU")
    parts = [f"{torch['version']}, {build} build"]
    parts += [f"{name} {torch[key]}" for name, key in (("cuDNN", "cudnn"), ("NCCL", "nccl")) if torch.get(key)]
    rows = [("torch", ", ".join(parts))]
    if torch.get("arch_list"):
        rows.append(("torch arch list", " ".join(torch["arch_list"])))
    devices = torch.get("devices") or []
    seen = ", ".join(
        f"cuda:{d['index']} {d['name']} (sm_{d['compute_capability'].replace('.', '')}, "
        f"{human_bytes(d['memory_mib'] * 2**20)})"
        for d in devices
    )
    rows.append(("torch sees", seen or ("Apple GPU (mps)" if torch.get("mps_available") else "no GPU")))
    return rows


def _driver_rows(facts: Facts) -> list[Row]:
    driver = section(facts, "driver")
    if driver.get("error"):
        return [("NVIDIA driver", f"{driver['source']} failed: {driver['error']}")]
    if not driver.get("source"):
        return [("NVIDIA driver", "none found (no nvidia-smi, no NVML)")]
    rows = [("NVIDIA driver", f"{driver.get('version')} (via {driver['source']})")]
    for gpu in driver.get("gpus") or []:
        memory = human_bytes(gpu["memory_mib"] * 2**20) if gpu.get("memory_mib") else "? GiB"
        rows.append((f"GPU {gpu['index']}", f"{gpu['name']}, compute capability {gpu['compute_capability']}, {memory}"))
    return rows


def _env_rows(facts: Facts) -> list[Row]:
    env = section(facts, "env")
    return [(name, env[name]) for name in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH") if env.get(name) is not None]


def _system_rows(facts: Facts) -> list[Row]:
    system = section(facts, "system")
    ram = f"{human_bytes(system['ram_total_bytes'])} ({human_bytes(system['ram_available_bytes'])} available)"
    rows = [("CPU", f"{system['cpu_count']} cores ({system['usable_cpus']} usable)"), ("RAM", ram)]
    if system.get("shm_total_bytes") is not None:
        rows.append(("/dev/shm", human_bytes(system["shm_total_bytes"])))
    return rows


def _hf_rows(facts: Facts) -> list[Row]:
    hf = section(facts, "hf")
    state = "writable" if hf["writable"] else f"NOT writable: {hf['write_error']}"
    flags = ", ".join(f"{k}={v}" for k, v in (hf.get("offline_flags") or {}).items()) or "none set"
    return [
        ("HF cache", f"{hf['hub_cache']} ({state}, {human_bytes(hf['free_bytes'])} free)"),
        ("offline flags", f"{flags} (hub {'offline' if hf['hub_offline'] else 'online'})"),
    ]


def _model_rows(facts: Facts) -> list[Row]:
    model = section(facts, "default_model")
    if model.get("bundled_path"):
        return [("default model", f"bundled: {model['bundled_path']}")]
    cached = "in the HF cache" if model.get("cached") else "not in the HF cache"
    return [("default model", f"not bundled ({model.get('bundled_error')}); {model.get('hub_id')} {cached}")]


def _package_rows(facts: Facts) -> list[Row]:
    packages = section(facts, "packages")
    rows = [("packages", f"tested ranges from the {packages.get('ranges_source')}")]
    for name, info in (packages.get("packages") or {}).items():
        tested = f" (tested {info['tested']})" if info.get("tested") else ""
        rows.append((f"  {name}", f"{info.get('version') or 'not installed'}{tested}"))
    return rows


ROW_BUILDERS: dict[str, Callable[[Facts], list[Row]]] = {
    "python": _python_rows,
    "torch": _torch_rows,
    "driver": _driver_rows,
    "env": _env_rows,
    "system": _system_rows,
    "hf": _hf_rows,
    "default_model": _model_rows,
    "packages": _package_rows,
}


def fact_rows(facts: Facts) -> list[Row]:
    """The facts as short ``(label, value)`` rows, in a fixed, readable order."""
    rows: list[Row] = []
    for name, build in ROW_BUILDERS.items():
        value = facts.get(name)
        if isinstance(value, dict) and "probe_error" in value:
            rows.append((name, f"probe failed: {value['probe_error']}"))
            continue
        try:
            rows.extend(build(facts))
        except Exception as exc:  # an odd fact must not break the report
            rows.append((name, f"could not show ({type(exc).__name__}: {exc})"))
    return rows


# ------------------------------------------------------------------- report


@dataclass
class Report:
    """Facts and findings of one doctor run, with three ways to show them."""

    facts: Facts
    findings: list[Finding] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0: nothing to do; 1: warnings; 2: errors (the ``course doctor`` exit status)."""
        return exit_code(self.findings)

    def summary(self) -> str:
        """Counts per severity, worst first, e.g. 1 error, 2 warnings, 1 info."""
        counts = [(severity, sum(f.severity == severity for f in self.findings)) for severity in reversed(SEVERITIES)]
        words = [f"{n} {s}{'s' if n != 1 and s != 'info' else ''}" for s, n in counts]
        return ", ".join(words)

    def to_dict(self) -> dict:
        """``{"facts": {...}, "findings": [{"id", "severity", "cause", "fix"}, ...]}``."""
        return {"facts": self.facts, "findings": [finding.to_dict() for finding in self.findings]}

    def to_json(self) -> str:
        """The JSON that ``course doctor --json`` prints."""
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_text(self, width: int = 100) -> str:
        """Plain text for a terminal: facts, then findings with their fixes."""
        rows = fact_rows(self.facts)
        label_width = max((len(label) for label, _ in rows), default=0) + 2
        lines = [f"course doctor: {self.summary()} (exit code {self.exit_code})", "", "Facts"]
        lines += [f"  {label:<{label_width}}{value}" for label, value in rows]
        lines += ["", "Findings" if self.findings else "Findings: none, all good."]
        for finding in self.findings:
            lines.append(f"  [{finding.severity.upper()}] {finding.id}")
            lines += textwrap.wrap(finding.cause, width, initial_indent="      ", subsequent_indent="      ")
            lines += textwrap.wrap(finding.fix, width, initial_indent="      fix: ", subsequent_indent="           ")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """The text report as the notebook's ``text/plain`` (exports, terminals), not the dataclass repr."""
        printer.text("Report(...)" if cycle else self.to_text())

    def _repr_html_(self) -> str:
        """An HTML table that Jupyter shows when the report is a cell's result."""
        header = "".join(_cell("th", name) for name in ("severity", "id", "cause", "fix"))
        rows = "".join(_finding_row(finding) for finding in self.findings)
        findings = f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"
        facts = "".join(_fact_row(label, value) for label, value in fact_rows(self.facts))
        return (
            f'<div class="course-doctor"><p><b>course doctor</b>: {html.escape(self.summary())} '
            f"(exit code {self.exit_code})</p>{findings if self.findings else '<p>No findings: all good.</p>'}"
            f"<details><summary>Facts</summary><table><tbody>{facts}</tbody></table></details></div>"
        )


# --------------------------------------------------------------------- HTML


def _cell(tag: str, content: str, style: str = "") -> str:
    """One table cell; ``content`` must already be HTML-escaped."""
    return f'<{tag} style="text-align:left; vertical-align:top; padding:4px 8px; {style}">{content}</{tag}>'


def _finding_row(finding: Finding) -> str:
    """A finding as a table row: coloured severity badge, id, cause, fix."""
    colour = BADGE_COLOURS[finding.severity]
    badge = (
        f'<span style="background:{colour}; color:white; padding:1px 6px; border-radius:3px">{finding.severity}</span>'
    )
    cells = [
        _cell("td", badge),
        _cell("td", f"<code>{html.escape(finding.id)}</code>", "white-space:nowrap"),
        _cell("td", html.escape(finding.cause)),
        _cell("td", html.escape(finding.fix)),
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _fact_row(label: str, value: str) -> str:
    """A fact as a table row; indented labels (the packages) stay indented."""
    indent = "padding-left:24px" if label.startswith(" ") else ""
    return f"<tr>{_cell('th', html.escape(label.strip()), indent)}{_cell('td', html.escape(str(value)))}</tr>"
