"""The zygote's life in one ``course grade`` run: run folder, cgroups, preload list, start, stop.

The zygote (:mod:`course.grade.isolation.zygote`) is started first, before
nbgrader is even imported, because importing torch is the longest step of
a run; it is stopped (its kernels die with it), its log kept and the run
folder removed at the end, whatever happened in between.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from course.errors import CourseError
from course.grade.config import Settings
from course.grade.isolation.cgroups import RunGroups, TreeLimits
from course.grade.safeio import private_append, read_regular

_IMPORT = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_][\w.]*)", re.M)


def assignment_imports(source: Path) -> list[str]:
    """Top-level modules imported by the notebooks in ``source`` (and installed)."""
    import importlib.util

    names: list[str] = []
    for path in sorted(Path(source).glob("*.ipynb")):
        try:
            cells = json.loads(path.read_text()).get("cells", [])
        except (OSError, ValueError):
            continue
        for cell in cells:
            if cell.get("cell_type") == "code":
                source_text = "".join(cell.get("source", []))
                names += [m for m in _IMPORT.findall(source_text) if m not in names]

    def installed(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    return [n for n in names if not n.startswith(("__future__", ".")) and installed(n)]


def start_zygote(settings: Settings, run_dir: str, modules: list[str], threads: int) -> subprocess.Popen:
    """Start the kernel fork server; it preloads ``modules`` while workers start."""
    from course.grade.isolation.context import BASE_ENV

    env = {k: os.environ[k] for k in (*BASE_ENV, *settings.pass_env, "PATH", "PYTHONPATH") if k in os.environ}
    home = os.path.join(run_dir, "zygote-home")
    os.makedirs(home, exist_ok=True)
    env.update(
        HOME=home,
        TMPDIR=home,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYDEVD_DISABLE_FILE_VALIDATION="1",
        MPLBACKEND=os.environ.get("MPLBACKEND", "module://matplotlib_inline.backend_inline"),
    )
    if not settings.sandbox:
        env = {**os.environ, **env, "HOME": os.environ.get("HOME", home)}
    log = open(os.path.join(run_dir, "zygote.log"), "ab")
    # The modules travel on stdin, not argv: every kernel is a fork of the
    # zygote, and its /proc/1/cmdline would show them.
    cmd = [sys.executable, "-m", "course.grade.isolation.zygote", os.path.join(run_dir, "zygote.sock")]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, cwd=run_dir)
    proc.stdin.write(json.dumps(modules).encode() + b"\n")
    proc.stdin.close()
    return proc


class Kernels:
    """The run folder and the zygote, started before the slow checks.

    Importing torch is the longest step of a run, and nbgrader's checks do
    not need it, so the zygote starts first, from what nbgrader_config.py
    and the assignment's source notebooks say, and imports torch while the
    coordinator imports nbgrader and checks the gradebook.  A run that stops
    early (bad input, nothing to grade) just kills it.
    """

    def __init__(self, settings: Settings) -> None:
        from course.grade.config import default_jobs, read_config_file

        config = read_config_file(settings.course_dir)
        self.sandbox_root = settings.sandbox_root
        source = config.get("CourseDirectory", {}).get("source_directory", "source")
        folder = settings.course_dir / source / settings.assignment
        modules = assignment_imports(folder) if settings.preload == "auto" else list(settings.preload)
        # A blocked package is never preloaded: a kernel forked from the
        # zygote would otherwise hold its code in memory.
        blocked = set(settings.blocked_packages)
        self.modules = [m for m in modules if m.partition(".")[0] not in blocked]
        self.threads = max(1, default_jobs() // max(1, settings.jobs))
        self.run_dir = make_run_dir(settings, self.sandbox_root)
        try:
            probe = settings.limits.tree(cpus=self.threads)
            self.cgroups, self.limits_note = open_tree_limits(
                settings.process_tree_limits, os.path.basename(self.run_dir), probe
            )
        except CourseError:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        settings.cgroups = self.cgroups
        try:
            self.zygote = start_zygote(settings, self.run_dir, self.modules, self.threads)
        except BaseException:
            if self.cgroups is not None:
                self.cgroups.remove()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def close(self, settings: Settings) -> None:
        """Stop the zygote (its kernels die with it), keep its log, remove the run folder."""
        self.zygote.kill()
        self.zygote.wait()
        try:
            log = read_regular(Path(self.run_dir, "zygote.log"), limit=1 << 20, tail=True) or b""
            if log.strip() and settings.results_dir.is_dir():
                fd = private_append(settings.results_dir / "grade.log")
                with os.fdopen(fd, "ab") as handle:
                    handle.write(b"--- zygote ---\n" + log)
        except OSError:
            pass
        if self.cgroups is not None:
            self.cgroups.remove()
        _unmount_under(self.run_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def open_tree_limits(mode: str, name: str, probe: TreeLimits | None = None) -> tuple[RunGroups | None, str]:
    """This run's cgroups (``process_tree_limits`` = auto/required/off) and a line saying what holds.

    "auto" grades with per-process limits where no cgroup can be made, or
    where a kernel's group cannot take the ``probe`` limits (and says why);
    "required" refuses to grade then.
    """
    from course.grade.isolation import cgroups

    if mode == "off":
        return None, "per process only (c.CourseGrade.process_tree_limits = 'off')"
    found = cgroups.open_run(name, probe)
    if isinstance(found, str):
        if mode == "required":
            raise CourseError(
                f"c.CourseGrade.process_tree_limits = 'required', but no cgroup is available: {found}"
            ) from None
        return None, f"per process only: {found}"
    return found, found.description


def _unmount_under(folder: str) -> None:
    """Detach any kernel ipc tmpfs a killed worker left mounted under ``folder``."""
    from course.grade.isolation.linux import SandboxError, mount_table, umount

    points = [entry.point for entry in mount_table()]
    for point in sorted(points, key=len, reverse=True):
        if point.startswith(folder.rstrip("/") + "/"):
            try:
                umount(point)
            except SandboxError:
                pass


def make_run_dir(settings: Settings, root: str = "") -> str:
    """A private folder for this run's sockets, lock and kernel boxes."""
    from course.grade.isolation.sandbox import ensure_private_dir

    if not root:
        root = "/run" if settings.sandbox and os.access("/run", os.W_OK) else tempfile.gettempdir()
    run_dir = tempfile.mkdtemp(prefix="course-grade-", dir=root)
    ensure_private_dir(run_dir, 0o711)
    ensure_private_dir(os.path.join(run_dir, "boxes"), 0o711)
    return run_dir
