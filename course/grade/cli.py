"""The ``course grade`` command line: options in, :func:`course.grade.runner.grade` out.

``add_arguments`` fills an argparse (sub)parser, so the ``course`` CLI and
``python -m course.grade`` share one definition; ``main`` accepts either
the parsed namespace or an argv list.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``course grade`` arguments to ``parser`` (no heavy imports)."""
    parser.description = (
        "Autograde every submission of ASSIGNMENT in submitted/ with nbgrader, in parallel, each kernel in a "
        "sandbox; then write HTML feedback, results/<assignment>/grades.csv and one JSON result per submission."
    )
    parser.add_argument("assignment", metavar="ASSIGNMENT", help="the nbgrader assignment id, e.g. ps1_attention")
    parser.add_argument(
        "--course-dir",
        metavar="DIR",
        default=None,
        help="the nbgrader course directory (default: the current directory, else ./grading)",
    )
    parser.add_argument("--jobs", "-j", type=int, default=None, metavar="N", help="parallel workers (default: cores)")
    parser.add_argument("--force", action="store_true", help="regrade submissions that are already graded")
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run kernels without isolation (trusted code only; needed where namespaces or root are unavailable)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds one cell may run (default: Execute.timeout from nbgrader_config.py)",
    )
    parser.add_argument("--db", default=None, metavar="URL", help="gradebook URL (default: CourseDirectory.db_url)")
    parser.add_argument(
        "--show-hidden-tests",
        action="store_true",
        help="show hidden tests and their traceback lines in the feedback",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


def settings_from_args(args: argparse.Namespace):
    """Turn parsed arguments into :class:`~course.grade.config.Settings`."""
    from course.errors import CourseError
    from course.grade.config import Settings, default_jobs

    jobs = args.jobs if args.jobs is not None else default_jobs()
    if jobs < 1:
        raise CourseError(f"--jobs must be at least 1, not {jobs}")
    if args.timeout is not None and args.timeout <= 0:
        raise CourseError(f"--timeout must be positive, not {args.timeout}")
    return Settings(
        course_dir=args.course_dir,
        assignment=args.assignment,
        jobs=jobs,
        force=args.force,
        sandbox=not args.no_sandbox,
        timeout=args.timeout,
        db_url=args.db,
        show_hidden_tests=args.show_hidden_tests,
        progress=not args.quiet,
    )


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run ``course grade``; ``args`` is a parsed namespace or an argv list.

    Returns the exit code: 0 when every submission was graded, 1 when some
    could not be (they are retried by the next run).  Problems the user
    can fix raise :class:`~course.errors.CourseError` (one line).
    """
    from course.grade.runner import grade

    if not isinstance(args, argparse.Namespace):
        parser = add_arguments(argparse.ArgumentParser(prog="course grade"))
        args = parser.parse_args(args)
    return grade(settings_from_args(args))
