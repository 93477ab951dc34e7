"""Execute the lesson notebooks with papermill and write a summary.

``course run`` is how CI (and the GPU image) checks that every lesson still
works.  For each notebook it:

1. reads the profile's parameters from ``course/profiles.toml`` (``smoke`` =
   CPU in minutes, ``full`` = the GPU image) and keeps those the notebook
   declares in its ``parameters`` cell;
2. executes it with papermill into ``OUT/<name>.ipynb``, with a per-cell
   timeout, watching the kernel's peak memory; the kernel draws figures
   inline whatever ``MPLBACKEND`` says (see :func:`lesson_kernel_manager`);
3. collects the metrics the notebook recorded with :func:`course.metrics.record`.

``OUT/summary.json`` then looks like::

    {"profile": "smoke", "notebooks": [{"name": "00_environment", "status": "ok",
      "seconds": 21.4, "peak_rss_mb": 612.0, "metrics": {"matmul_tflops_cpu": 0.09}}]}
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from course.errors import CourseError
from course.metrics import metrics_from_notebook

PROFILES_FILE = Path(__file__).with_name("profiles.toml")
#: The backend Jupyter itself uses: figures become PNG outputs saved in the notebook.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


# ------------------------------------------------------------------ finding things


def notebooks_dir() -> Path:
    """Where the lessons live: $COURSE_NOTEBOOKS, ./notebooks, or the repo's notebooks/."""
    candidates = [os.environ.get("COURSE_NOTEBOOKS"), Path.cwd() / "notebooks", Path(__file__).parents[1] / "notebooks"]
    for candidate in candidates:
        if candidate and any(Path(candidate).glob("[0-9][0-9]_*.ipynb")):
            return Path(candidate)
    raise CourseError("no lesson notebooks found: run from the course repository or set COURSE_NOTEBOOKS=DIR")


def find_notebooks(names: Iterable[str] | None = None, folder: Path | None = None) -> list[Path]:
    """Resolve names like ``00_environment``, ``00`` or a path to notebook files, in course order."""
    if names is None:
        folder = folder or notebooks_dir()
        return sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            found.append(path)
            continue
        folder = folder or notebooks_dir()
        matches = sorted(folder.glob(f"{path.stem}*.ipynb"))
        if len(matches) != 1:
            available = ", ".join(p.stem for p in sorted(folder.glob("[0-9][0-9]_*.ipynb")))
            what = "is ambiguous" if matches else "not found"
            raise CourseError(f"notebook '{name}' {what}; available: {available}")
        found.append(matches[0])
    return found


def load_profile(name: str, path: Path = PROFILES_FILE) -> dict[str, Any]:
    """One profile from the profiles file: description, cell_timeout, parameters, notebooks."""
    with open(path, "rb") as handle:
        profiles = tomllib.load(handle)
    if name not in profiles:
        raise CourseError(f"unknown profile '{name}': choose one of {', '.join(profiles)} (from {path.name})")
    return profiles[name]


def parameters_for(notebook: Path, profile: dict[str, Any]) -> dict[str, Any]:
    """The profile's parameters that this notebook declares in its ``parameters`` cell.

    Common parameters come first, then the notebook's own section overrides
    them.  Names the notebook does not declare are dropped, so a profile can
    set ``device`` for every lesson without papermill warnings.
    """
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    if not declared:
        raise CourseError(f"{notebook.name} has no cell tagged 'parameters'; add one so profiles can drive it")
    wanted = {**profile.get("parameters", {}), **profile.get("notebooks", {}).get(notebook.stem, {})}
    return {key: value for key, value in wanted.items() if key in declared}


# ------------------------------------------------------------------- peak memory


def _descendants(pid: int) -> list[int]:
    """Process ids of all children of ``pid``, recursively (Linux /proc, psutil elsewhere)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _peak_rss_mb(pid: int) -> float:
    """Peak resident memory of one process in MB: VmHWM on Linux, current RSS elsewhere."""
    from course.memory import high_water_mb

    peak = high_water_mb(pid)
    if peak is not None:
        return peak
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


class PeakMemoryWatcher:
    """Samples the peak RSS of every child process (the kernel) while a notebook runs.

    Linux keeps a high-water mark per process (VmHWM), so sampling every
    0.2 s still gives the true peak of a kernel, up to its last sample.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for pid in _descendants(os.getpid()):
                self.peak_mb = max(self.peak_mb, _peak_rss_mb(pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemoryWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------- the kernel


@functools.cache
def lesson_kernel_manager() -> type:
    """The kernel manager ``course run`` (and the tests) execute lessons with.

    Two differences from Jupyter's default, both about what ends up in the
    executed notebook:

    * **Inline figures whatever the environment.**  A kernel inherits
      ``MPLBACKEND``; CI sets it to ``Agg`` (so does tests/conftest.py), and
      under Agg a figure is drawn nowhere: the executed copy holds no image.
      The kernel gets the inline backend, the one JupyterLab uses.
    * **ipc sockets, not TCP.**  The kernel and this process share a machine,
      so Unix sockets (readable by this user only) are the natural transport,
      and ipykernel has no "running over TCP without encryption" warning to
      print for every notebook.  Windows has no ipc transport: TCP there.
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class LessonKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="tcp" if os.name == "nt" else "ipc", config=True)

        async def start_kernel(self, **kw: Any) -> None:
            if self.transport == "ipc" and not os.path.isabs(self.ip):
                # the default, "kernel-ipc", is relative: socket files would land in the lesson's output
                # folder; jupyter_client removes them at shutdown wherever they are
                self.ip = os.path.join(tempfile.gettempdir(), f"course-kernel-{uuid.uuid4().hex[:12]}-ipc")
            env = dict(kw.pop("env", None) or os.environ)
            env["MPLBACKEND"] = INLINE_BACKEND
            await super().start_kernel(env=env, **kw)

    return LessonKernelManager


# ----------------------------------------------------------------------- running


def _writable_dir(path: Path) -> Path:
    """Create the output folder and prove it is writable before any work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".course-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise CourseError(f"cannot write to output folder {path}: {error.strerror or error}") from None
    return path


def _failure(error: Exception) -> str:
    """One line naming the failing cell, from papermill's or nbclient's exception."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        return f"cell {error.cell_index} (execution {error.exec_count}): {error.ename}: {error.evalue}".strip()
    if isinstance(error, TimeoutError):
        return f"cell timed out: {str(error).splitlines()[0] if str(error) else 'no output in time'}"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def run_notebook(notebook: Path, out_dir: Path, profile: dict[str, Any], cell_timeout: float | None) -> dict[str, Any]:
    """Execute one notebook with papermill and return its summary entry."""
    import nbformat
    import papermill

    output = out_dir / notebook.name
    parameters = parameters_for(notebook, profile)
    started = time.perf_counter()
    status, error = "ok", None
    with PeakMemoryWatcher() as memory:
        try:
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(out_dir),
                execution_timeout=cell_timeout,
                progress_bar=sys.stderr.isatty(),
                log_output=False,
                kernel_manager_class=lesson_kernel_manager(),
            )
        except Exception as exc:  # any failure is reported per notebook, the run goes on
            status, error = ("timeout" if isinstance(exc, TimeoutError) else "failed"), _failure(exc)
    entry: dict[str, Any] = {
        "name": notebook.stem,
        "status": status,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(memory.peak_mb, 1),
        "metrics": metrics_from_notebook(nbformat.read(output, as_version=4)) if output.exists() else {},
        "parameters": parameters,
        "output": str(output),
    }
    if error:
        entry["error"] = error
    return entry


def run_notebooks(
    names: Iterable[str] | None = None,
    *,
    profile: str = "smoke",
    out_dir: str | Path = "build/run",
    cell_timeout: float | None = None,
) -> dict[str, Any]:
    """Run notebooks in course order under a profile; write and return the summary.

    Every notebook runs even when an earlier one fails, so one report shows
    all breakage; the summary's ``status`` fields (and the CLI's exit code)
    say whether everything passed.
    """
    settings = load_profile(profile)
    notebooks = find_notebooks(names)
    out = _writable_dir(Path(out_dir))
    timeout = cell_timeout if cell_timeout is not None else settings.get("cell_timeout")
    summary: dict[str, Any] = {"profile": profile, "notebooks": []}
    for number, notebook in enumerate(notebooks, 1):
        print(f"[{number}/{len(notebooks)}] {notebook.stem} ({profile}) ...", file=sys.stderr, flush=True)
        entry = run_notebook(notebook, out, settings, timeout)
        summary["notebooks"].append(entry)
        print(f"    {_row(entry)}", file=sys.stderr, flush=True)
        _write_json(out / "summary.json", summary)
    print(format_summary(summary, out))
    return summary


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically: a reader never sees a half-written summary."""
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(path)


def _row(entry: dict[str, Any]) -> str:
    """One readable line for a notebook's result."""
    metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry["metrics"].items())
    line = (
        f"{entry['name']:<18} {entry['status']:<8} {entry['seconds']:>7.1f} s "
        f"{entry['peak_rss_mb']:>8.0f} MB  {metrics}"
    )
    return line + (f"\n{'':<19}{entry['error']}" if "error" in entry else "")


def format_summary(summary: dict[str, Any], out: Path) -> str:
    """The table printed at the end of a run, with where to find the outputs."""
    header = f"{'notebook':<18} {'status':<8} {'time':>9} {'peak RSS':>11}  metrics"
    rows = [_row(entry) for entry in summary["notebooks"]]
    total = sum(entry["seconds"] for entry in summary["notebooks"])
    failed = [entry["name"] for entry in summary["notebooks"] if entry["status"] != "ok"]
    verdict = f"FAILED: {', '.join(failed)}" if failed else "all notebooks passed"
    footer = [f"total {total:.1f} s; {verdict}", f"executed notebooks: {out}/", f"summary: {out / 'summary.json'}"]
    return "\n".join([header, *rows, *footer])
