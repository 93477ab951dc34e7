"""Runs inside the student's kernel: the course's own package is out of reach.

Every answer of ps1-ps3 exists in the course library (``mean_pool`` in
``course.pipelines``, ``train_step`` in ``course.train`` ...), which
students keep in JupyterHub for the lessons.  In a graded kernel it must
be unreachable, by every route:

* ``import course...``, ``importlib.import_module(name)`` with a computed
  name, ``__import__``: :class:`BlockedPackages`, first on ``sys.meta_path``,
  refuses the name (``ModuleNotFoundError``) and reports the attempt;
* ``sys.modules``: the zygote imported a little of ``course.grade`` to start
  kernels; :func:`install` drops every module of a blocked package from
  ``sys.modules`` after the fork (the zygote never preloads a blocked
  package, so nothing with an answer was ever in this process) and leaves a
  :class:`Tripwire` in the package's place: ``sys.modules["course"]``
  finds it, and using it (``.__path__``, any attribute, importing through
  it) is refused and reported;
* reading and ``exec``-ing the source files: the sandbox does not show the
  package's folder at all (it is hidden like the course directory), so
  removing the finder from ``sys.meta_path`` gains nothing; an audit hook
  (which Python code cannot remove) reports every attempt to open a file
  under the package's folder.

Each refused import writes one line, ``course-grade: blocked import of
NAME``, to the kernel's log (its stderr, a file only root reads), each
refused read ``course-grade: blocked read of PATH``, and the grader names
them in the tamper report.  The kernel's own output class
(:mod:`course.grade.isolation.kernel_io`) stays reachable under the neutral name
:data:`KERNEL_IO_ALIAS`; it holds no answer.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types

#: Where the kernel's output class lives once ``course`` is gone from sys.modules.
KERNEL_IO_ALIAS = "_course_grade_kernel_io"
#: Prefix of the lines the guard writes to the kernel log.
REPORT = "course-grade: blocked import of "
#: ``__file__`` of the module left where a blocked package was.
BLOCKED_ORIGIN = "<not available while notebooks are graded>"
#: Prefix of the lines the guard writes when a blocked package's file is opened.
REPORT_READ = "course-grade: blocked read of "


def _write_report(report_fd: int, line: str) -> None:
    """Append one line to the kernel log; a closed descriptor loses the line, never the kernel."""
    try:
        os.write(report_fd, f"{line}\n".encode("ascii", "backslashreplace"))
    except OSError:
        pass


class BlockedPackages:
    """A ``sys.meta_path`` finder that refuses the blocked packages and reports each attempt."""

    def __init__(self, names: list[str], report_fd: int = -1) -> None:
        self.names = frozenset(names)
        #: A copy of the kernel log's descriptor, taken before ipykernel
        #: redirects fd 2 into the notebook's output.
        self.report_fd = report_fd

    def find_spec(self, fullname: str, path=None, target=None):
        """Refuse a blocked package or any of its modules; leave every other name to the next finder."""
        if fullname.partition(".")[0] not in self.names:
            return None
        _write_report(self.report_fd, f"{REPORT}{fullname}")
        raise _refusal(fullname)

    def find_module(self, fullname: str, path=None):  # pragma: no cover - legacy protocol
        return None


def _refusal(fullname: str) -> ModuleNotFoundError:
    """The error a student sees for any route to a blocked package."""
    return ModuleNotFoundError(
        f"No module named {fullname!r}: the {fullname.partition('.')[0]!r} package is not available "
        "while notebooks are graded; write the code yourself",
        name=fullname,
    )


class _TripwireSpec(importlib.machinery.ModuleSpec):
    """A tripwire's ``__spec__``: the import system asks it whether the module is still loading.

    ``importlib.import_module("course")`` reads ``__spec__._initializing``
    and is refused there.  ``import course`` (C's fast path) swallows the
    error and hands out the tripwire itself, which is reported here and
    useless: it has no attributes.  Everything else of a real spec is there,
    so ``repr()`` and ``inspect`` treat the tripwire as an ordinary module.
    """

    def __init__(self, name: str, report_fd: int) -> None:
        super().__init__(name, loader=None, origin=BLOCKED_ORIGIN)
        self._report_fd = report_fd

    @property
    def _initializing(self) -> bool:
        _write_report(self._report_fd, f"{REPORT}{self.name}")
        raise _refusal(self.name)


class Tripwire(types.ModuleType):
    """Stands in ``sys.modules`` where a blocked package was: it holds nothing, and reaching into it is reported.

    Code that scans ``sys.modules`` (``inspect.getmodule`` in torch and in
    tracebacks, ``getattr(module, name, None)`` loops) must pass it by
    unharmed: it has a ``__file__`` string and a real spec, and a missing
    attribute is a plain ``AttributeError``.  Only ``__path__``, which
    importing anything below the package or locating its files needs, is
    reported (and refused).
    """

    def __init__(self, name: str, report_fd: int) -> None:
        super().__init__(name)
        self.__file__ = BLOCKED_ORIGIN
        self.__spec__ = _TripwireSpec(name, report_fd)
        self._report_fd = report_fd

    def __getattr__(self, attr: str):
        if attr == "__path__":
            _write_report(self._report_fd, f"{REPORT}{self.__name__}")
        raise AttributeError(f"the {self.__name__!r} package is not available while notebooks are graded")


def _package_folders(names: frozenset[str]) -> list[str]:
    """The folders of the blocked packages loaded in this process (read before they are purged)."""
    folders = []
    for name in names:
        module = sys.modules.get(name)
        for folder in getattr(module, "__path__", None) or []:
            folders.append(os.path.join(os.path.realpath(folder), ""))
    return folders


def _watch_reads(folders: list[str], report_fd: int) -> None:
    """Report every attempt to open a file under ``folders`` (an audit hook: it cannot be removed)."""
    prefixes = tuple(folders)

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        try:
            path = os.path.normpath(os.path.join(os.getcwd(), os.fsdecode(args[0])))
        except (OSError, TypeError, ValueError):
            return
        if path.startswith(prefixes) or os.path.join(path, "") in prefixes:
            _write_report(report_fd, f"{REPORT_READ}{path}")

    sys.addaudithook(hook)


def install(names: list[str]) -> None:
    """Block ``names`` in this process: purge them, leave tripwires, put the finder first, watch reads."""
    if not names:
        return
    io = sys.modules.get("course.grade.isolation.kernel_io")
    if io is not None:
        sys.modules[KERNEL_IO_ALIAS] = io
    blocked = frozenset(names)
    folders = _package_folders(blocked)
    for name in list(sys.modules):
        if name.partition(".")[0] in blocked:
            del sys.modules[name]
    try:
        report_fd = os.dup(2)  # the kernel log, before ipykernel captures fd 2
    except OSError:
        report_fd = -1
    sys.meta_path.insert(0, BlockedPackages(names, report_fd))
    for name in blocked:
        sys.modules[name] = Tripwire(name, report_fd)
    if folders:
        _watch_reads(folders, report_fd)
    import importlib

    importlib.invalidate_caches()


def attempts(log_text: str) -> list[str]:
    """Module names the guard refused, from the kernel log's text, one per attempt, in order.

    ``import course.pipelines`` imports ``course`` first, so it is refused
    (and named) as ``course``.
    """
    return _reported(log_text, REPORT)


def reads(log_text: str) -> list[str]:
    """Paths under a blocked package's folder that the kernel tried to open, one per attempt, in order."""
    return _reported(log_text, REPORT_READ)


def _reported(log_text: str, prefix: str) -> list[str]:
    """What follows ``prefix`` on each of the log's lines that start with it (at most 200 characters each)."""
    found: list[str] = []
    for line in log_text.splitlines():
        if line.startswith(prefix):
            name = line[len(prefix) :].strip()[:200]
            if name:
                found.append(name)
    return found
