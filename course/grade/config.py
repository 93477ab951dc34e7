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

import functools
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from course.errors import CourseError
from course.grade.isolation.sandbox import Limits

#: Environment variables kernels receive by default (when set).
DEFAULT_PASS_ENV = (
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "MPLBACKEND",
    "TZ",
    "CUDA_VISIBLE_DEVICES",
)


@dataclass
class Settings:
    """Everything one ``course grade`` run needs to know, resolved once, before the zygote starts.

    The command line fills it (:func:`course.grade.cli.settings_from_args`),
    then ``c.CourseGrade`` (typed by :func:`course_grade_class`) fills what
    the command line left open.
    """

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
    pass_env: list[str] = field(default_factory=lambda: list(DEFAULT_PASS_ENV))
    #: Wall-clock seconds all cells of one submission may run together
    #: (0: ten times the per-cell timeout).
    submission_seconds: float = 0
    #: Code cells a submitted notebook may have; more is rejected.
    max_cells: int = 500
    #: Packages graded kernels cannot import by any route (the course's own
    #: implementations of what the assignments ask for).
    blocked_packages: list[str] = field(default_factory=lambda: ["course"])
    #: Limits on each kernel's whole process tree with cgroups: "auto" (where
    #: the machine allows), "required" (refuse to grade without) or "off".
    process_tree_limits: str = "auto"
    #: The run's cgroups once created (a course.grade.isolation.cgroups.RunGroups), else None.
    cgroups: object | None = None

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


@functools.cache
def course_grade_class() -> type:
    """The ``CourseGrade`` Configurable: every ``c.CourseGrade.*`` setting, typed and documented.

    Built on first use (traitlets is light, but ``import course.grade`` must
    stay instant), like every lazily built class of ``course.grade``.
    ``course grade --help-settings``-style documentation: ``CourseGrade.class_get_help()``.
    """
    from traitlets import Bool, Enum, Float, Integer, List, Unicode, Union, default
    from traitlets.config import Configurable

    limits = Limits()

    class CourseGrade(Configurable):
        """What ``course grade`` may do: ``c.CourseGrade.*`` in nbgrader_config.py (the command line wins)."""

        jobs = Integer(0, help="ignored here: the command line's --jobs decides (default: the cores)").tag(config=True)
        timeout = Float(None, allow_none=True, help="seconds one cell may run (default: Execute.timeout)").tag(
            config=True
        )
        show_hidden_tests = Bool(False, help="show hidden tests and their traceback lines in feedback").tag(config=True)
        preload = Union(
            [Unicode(), List(Unicode())],
            default_value="auto",
            help='modules the zygote imports before forking kernels ("auto": the assignment\'s imports)',
        ).tag(config=True)
        uid_base = Integer(
            help="first candidate sandbox uid range (default: COURSE_GRADE_UID_BASE, else 2100000000)"
        ).tag(config=True)
        hide = List(Unicode(), help="more folders kernels must not see").tag(config=True)
        expose = List(Unicode(), help="more paths kernels must see, read-only (e.g. a shared dataset)").tag(config=True)
        max_output_bytes = Integer(1_000_000, help="bytes of output kept per cell (8 x that per notebook)").tag(
            config=True
        )
        stderr_fails = Bool(False, help="stderr output zeroes a test, as in plain nbgrader").tag(config=True)
        sandbox_root = Unicode("", help="where per-run folders go (default: /run, else the temp folder)").tag(
            config=True
        )
        pass_env = List(Unicode(), default_value=list(DEFAULT_PASS_ENV), help="variables kernels receive").tag(
            config=True
        )
        submission_seconds = Float(
            0, help="wall-clock budget of all cells of one submission (0: ten times the per-cell timeout)"
        ).tag(config=True)
        max_cells = Integer(500, help="code cells a submitted notebook may have").tag(config=True)
        blocked_packages = List(
            Unicode(), default_value=["course"], help="packages graded kernels cannot reach by any route"
        ).tag(config=True)
        process_tree_limits = Enum(
            ["auto", "required", "off"],
            default_value="auto",
            help="limit each kernel's whole process tree with cgroups: where available, always, or never",
        ).tag(config=True)
        memory_mb = Integer(
            limits.memory_mb,
            help="RAM per kernel process on top of the preload (RLIMIT_DATA); with cgroups the whole tree "
            "may use this plus disk_mb",
        ).tag(config=True)
        cpu_seconds = Integer(
            limits.cpu_seconds, help="CPU seconds of the kernel's processes together (cgroups), else per process"
        ).tag(config=True)
        processes = Integer(
            limits.processes, help="processes + threads per sandbox uid (RLIMIT_NPROC) and per kernel tree (cgroups)"
        ).tag(config=True)
        file_mb = Integer(limits.file_mb, help="largest file a kernel may write (RLIMIT_FSIZE)").tag(config=True)
        disk_mb = Integer(limits.disk_mb, help="size of the kernel's private tmpfs").tag(config=True)
        open_files = Integer(limits.open_files, help="open files per kernel process (RLIMIT_NOFILE)").tag(config=True)

        @default("uid_base")
        def _uid_base_default(self):
            return int(os.environ.get("COURSE_GRADE_UID_BASE", "2100000000"))

    return CourseGrade


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
    """Fill settings from ``c.CourseGrade`` in nbgrader_config.py (options already given win).

    ``app`` is anything with a traitlets ``config`` (nbgrader's app, or a
    holder of :func:`read_config_file`'s result).  Values are checked by the
    :func:`course_grade_class` traits: a wrong name or type is one clear line.
    """
    from traitlets import TraitError
    from traitlets.config import Config

    cls = course_grade_class()
    section = dict(app.config.get("CourseGrade", {}))
    known = set(cls.class_trait_names(config=True))
    unknown = sorted(set(section) - known)
    if unknown:
        raise CourseError(f"unknown CourseGrade setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        conf = cls(config=Config({"CourseGrade": section}))
    except TraitError as error:
        raise CourseError(f"c.CourseGrade in nbgrader_config.py: {str(error).splitlines()[0]}") from None
    timeout = app.config.get("Execute", {}).get("timeout")
    settings.execute_timeout = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None
    limit_names = {f.name for f in fields(Limits)}
    for key in section:
        value = getattr(conf, key)
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
