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
  package, so nothing with an answer was ever in this process);
* reading and ``exec``-ing the source files: the sandbox does not show the
  package's folder at all (it is hidden like the course directory), so
  removing the finder from ``sys.meta_path`` gains nothing.

Each refused import writes one line, ``course-grade: blocked import of
NAME``, to the kernel's log (its stderr, a file only root reads), and the
grader names it in the tamper report.  The kernel's own output class
(:mod:`course.grade.kernel_io`) stays reachable under the neutral name
:data:`KERNEL_IO_ALIAS`; it holds no answer.
"""

from __future__ import annotations

import os
import sys

#: Where the kernel's output class lives once ``course`` is gone from sys.modules.
KERNEL_IO_ALIAS = "_course_grade_kernel_io"
#: Prefix of the lines the guard writes to the kernel log.
REPORT = "course-grade: blocked import of "


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
        try:
            os.write(self.report_fd, f"{REPORT}{fullname}\n".encode("ascii", "backslashreplace"))
        except OSError:
            pass
        raise ModuleNotFoundError(
            f"No module named {fullname!r}: the {fullname.partition('.')[0]!r} package is not available "
            "while notebooks are graded; write the code yourself",
            name=fullname,
        )

    def find_module(self, fullname: str, path=None):  # pragma: no cover - legacy protocol
        return None


def install(names: list[str]) -> None:
    """Block ``names`` in this process: purge them from sys.modules, put the finder first."""
    if not names:
        return
    io = sys.modules.get("course.grade.kernel_io")
    if io is not None:
        sys.modules[KERNEL_IO_ALIAS] = io
    blocked = frozenset(names)
    for name in list(sys.modules):
        if name.partition(".")[0] in blocked:
            del sys.modules[name]
    try:
        report_fd = os.dup(2)  # the kernel log, before ipykernel captures fd 2
    except OSError:
        report_fd = -1
    sys.meta_path.insert(0, BlockedPackages(names, report_fd))
    import importlib

    importlib.invalidate_caches()


def attempts(log_text: str) -> list[str]:
    """Module names the guard refused, from the kernel log's text, one per attempt, in order.

    ``import course.pipelines`` imports ``course`` first, so it is refused
    (and named) as ``course``.
    """
    found: list[str] = []
    for line in log_text.splitlines():
        if line.startswith(REPORT):
            name = line[len(REPORT) :].strip()[:200]
            if name:
                found.append(name)
    return found
