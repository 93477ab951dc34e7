"""Where the course is, how nbgrader is configured, and what ``course grade`` may do.

``course grade`` reads the same configuration as ``nbgrader autograde``:
nbgrader's own ``AutogradeApp`` loads ``nbgrader_config.py`` from the
course directory (and the Jupyter config path), so ``CourseDirectory``,
``Execute.timeout``, ``IgnorePattern``, ``ClearSolutions`` ... mean what
nbgrader says they mean.  The grader's own knobs live in the same file
under ``c.CourseGrade``::

    c.CourseGrade.memory_mb = 8192          # per kernel, on top of torch
    c.CourseGrade.preload = ["torch", "transformers"]
    c.CourseGrade.show_hidden_tests = False

Command-line options win over the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from course.errors import CourseError
from course.grade.sandbox import Limits


@dataclass
class Settings:
    """Everything one ``course grade`` run needs to know, resolved."""

    course_dir: Path
    assignment: str
    jobs: int = 1
    force: bool = False
    sandbox: bool = True
    timeout: float | None = None
    db_url: str | None = None
    show_hidden_tests: bool = False
    progress: bool = True
    limits: Limits = field(default_factory=Limits)
    #: Modules the zygote imports before forking kernels ("auto": the
    #: modules the assignment's source notebooks import).
    preload: list[str] | str = "auto"
    #: First uid of the sandbox users; worker N runs kernels as uid_base + N.
    #: ``COURSE_GRADE_UID_BASE`` in the environment changes the default.
    uid_base: int = field(default_factory=lambda: int(os.environ.get("COURSE_GRADE_UID_BASE", "2100000000")))
    #: Extra folders to hide from kernels, and extra paths to keep visible.
    hide: list[str] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    #: Bytes of output one cell may produce; the rest is cut.
    max_output_bytes: int = 1_000_000
    #: Whether a test cell that only wrote to stderr (a warning) scores zero,
    #: as in plain nbgrader.
    stderr_fails: bool = False
    #: Where the sandbox keeps per-kernel folders (default: /run, else a temp dir).
    sandbox_root: str = ""
    #: Environment variables passed to kernels (besides PATH, LANG, HOME, TMPDIR ...).
    pass_env: list[str] = field(
        default_factory=lambda: [
            "HF_HOME",
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
            "HF_DATASETS_OFFLINE",
            "TOKENIZERS_PARALLELISM",
            "MPLBACKEND",
            "TZ",
            "CUDA_VISIBLE_DEVICES",
        ]
    )

    #: Wall-clock seconds all cells of one submission may run together
    #: (0: ten times the per-cell timeout).
    submission_seconds: float = 0
    #: Code cells a submitted notebook may have; more is rejected.
    max_cells: int = 500
    #: Packages graded kernels cannot import by any route (the course's own
    #: implementations of what the assignments ask for).
    blocked_packages: list[str] = field(default_factory=lambda: ["course"])

    def cell_timeout(self, configured: float | None = None) -> float:
        """Seconds one cell may run: --timeout, else nbgrader's Execute.timeout, else 30."""
        return float(self.timeout or configured or 30)

    def submission_budget(self, configured: float | None = None) -> float:
        """Seconds all of one submission's cells may run together (default: 10 x the per-cell timeout)."""
        return float(self.submission_seconds or 10 * self.cell_timeout(configured))

    def watchdog_seconds(self) -> float:
        """After this long on one submission a worker is stopped: the budget, kernel starts, nbgrader's steps."""
        return self.submission_budget(self.execute_timeout) + 300

    #: nbgrader's Execute.timeout from the configuration (filled by apply_config_file).
    execute_timeout: float | None = None

    @property
    def results_dir(self) -> Path:
        """``<course>/results/<assignment>/``: grades.csv, run.json, grade.log, submissions/."""
        return self.course_dir / "results" / self.assignment

    def submission_result(self, student: str) -> Path:
        """``results/<assignment>/submissions/<student>.json``."""
        return self.results_dir / "submissions" / f"{student}.json"


#: Names accepted under ``c.CourseGrade`` in nbgrader_config.py.
CONFIG_KEYS = {
    "jobs",
    "timeout",
    "show_hidden_tests",
    "preload",
    "uid_base",
    "hide",
    "expose",
    "max_output_bytes",
    "stderr_fails",
    "sandbox_root",
    "pass_env",
    "submission_seconds",
    "max_cells",
    "blocked_packages",
    *(f.name for f in fields(Limits)),
}


def find_course_dir(course_dir: str | os.PathLike | None) -> Path:
    """The nbgrader course directory: the given one, else ``.`` or ``./grading``.

    A course directory is recognised by its ``nbgrader_config.py`` or its
    ``source/`` folder.
    """

    def is_course(path: Path) -> bool:
        return (path / "nbgrader_config.py").is_file() or (path / "source").is_dir()

    if course_dir is not None:
        path = Path(course_dir).expanduser().resolve()
        if not path.is_dir():
            raise CourseError(f"course directory {path} does not exist")
        if not is_course(path):
            raise CourseError(f"{path} is not an nbgrader course directory (no nbgrader_config.py and no source/)")
        return path
    for candidate in (Path.cwd(), Path.cwd() / "grading"):
        if is_course(candidate):
            return candidate.resolve()
    raise CourseError("no nbgrader course here: run from the course directory or pass --course-dir DIR")


def load_nbgrader_app(course_dir: Path, log_level: int | str = "WARNING"):
    """nbgrader's AutogradeApp, initialised on ``course_dir`` (config files loaded).

    The app is not started: it only carries the configuration and the
    ``CourseDirectory`` the converters need.
    """
    from nbgrader.apps.autogradeapp import AutogradeApp

    app = AutogradeApp()
    app.load_cwd_config = False  # the course directory decides, not where the grader runs
    app.log_level = log_level
    try:
        app.initialize([], root=str(course_dir))
    except SystemExit as error:  # traitlets exits on a broken config file
        raise CourseError(f"cannot load {course_dir / 'nbgrader_config.py'} (exit {error.code})") from None
    if Path(app.coursedir.root).resolve() != course_dir:
        app.coursedir.root = str(course_dir)
    return app


def read_config_file(course_dir: Path):
    """The course's nbgrader_config.py as a traitlets Config, without importing nbgrader.

    Used before nbgrader is loaded (to start the zygote early); an unreadable
    file gives an empty Config here and a clear error from nbgrader later.
    """
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    if not (course_dir / "nbgrader_config.py").is_file():
        return Config()
    try:
        return PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
    except Exception:
        return Config()


def apply_config_file(settings: Settings, app) -> Settings:
    """Fill settings from ``c.CourseGrade`` in nbgrader_config.py (options already given win)."""
    section = dict(app.config.get("CourseGrade", {}))
    unknown = sorted(set(section) - CONFIG_KEYS)
    if unknown:
        raise CourseError(
            f"unknown CourseGrade setting(s) {', '.join(unknown)}; known: {', '.join(sorted(CONFIG_KEYS))}"
        )
    timeout = app.config.get("Execute", {}).get("timeout")
    settings.execute_timeout = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None
    limit_names = {f.name for f in fields(Limits)}
    for key, value in section.items():
        if key in limit_names:
            setattr(settings.limits, key, int(value))
        elif key == "timeout" and settings.timeout is not None:
            continue
        elif key == "jobs":
            continue  # the command line always decides (default: the cores)
        else:
            setattr(settings, key, value)
    return settings


def default_jobs() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def nbgrader_overrides(settings: Settings):
    """nbgrader configuration that ``course grade`` imposes over nbgrader_config.py."""
    from traitlets.config import Config

    config = Config()
    config.OverwriteCells.add_missing_cells = True  # tests always run from the instructor's copy
    config.CourseSaveAutoGrades.stderr_fails = bool(settings.stderr_fails)
    if settings.timeout is not None:
        config.Execute.timeout = int(settings.timeout) if float(settings.timeout).is_integer() else settings.timeout
    return config
