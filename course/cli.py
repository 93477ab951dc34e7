"""The ``course`` command: doctor, assets, run, grade, serve.

Each subcommand is a thin wrapper over a library function, so everything the
CLI does can also be done from a notebook.  Problems a user can fix arrive as
:class:`~course.errors.CourseError` and are printed as one line with a
non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from course import __version__
from course.errors import CourseError


def _doctor(args: argparse.Namespace) -> int:
    from course.doctor import main as doctor_main

    return doctor_main(as_json=args.json)


def _assets(args: argparse.Namespace) -> int:
    from course import assets

    if args.action == "list":
        print(assets.format_assets(assets.list_assets()))
    elif args.action == "verify":
        for line in assets.verify():
            print(line)
    else:
        if not args.names:
            raise CourseError("prefetch needs at least one NAME (a registry name or a hub id)")
        for name in args.names:
            print(assets.prefetch(name))
    return 0


def _run(args: argparse.Namespace) -> int:
    from course.run import run_notebooks

    summary = run_notebooks(
        args.notebooks or None,
        profile=args.profile,
        out_dir=args.out,
        cell_timeout=args.timeout,
    )
    return 0 if all(item["status"] == "ok" for item in summary["notebooks"]) else 1


def _grade(args: argparse.Namespace) -> int:
    from course.grade import main as grade_main

    return grade_main(args)


def _serve(args: argparse.Namespace) -> int:
    from course.serve.server import ServeConfig, parse_models, serve

    config = ServeConfig(
        tasks=args.task,
        models=parse_models(args.task, args.model),
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        device=args.device,
        request_timeout_s=args.timeout,
    )
    return serve(config)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; kept free of heavy imports so ``--help`` is instant."""
    parser = argparse.ArgumentParser(
        prog="course",
        description="PyTorch + Transformers on GPUs, taught in Jupyter: check, fetch, run, grade.",
    )
    parser.add_argument("--version", action="version", version=f"course {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    doctor = commands.add_parser("doctor", help="check GPU, driver, torch and the course's packages")
    doctor.add_argument("--json", action="store_true", help="print facts and findings as JSON")
    doctor.set_defaults(handler=_doctor)

    assets = commands.add_parser("assets", help="list, verify or prefetch models and datasets")
    assets.add_argument("action", choices=["list", "verify", "prefetch"])
    assets.add_argument("names", nargs="*", metavar="NAME", help="for prefetch: registry names or hub ids")
    assets.set_defaults(handler=_assets)

    run = commands.add_parser("run", help="execute lesson notebooks with papermill and write a summary")
    run.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="names like 00_environment (default: all)")
    run.add_argument("--profile", default="smoke", help="parameter profile from course/profiles.toml (smoke, full)")
    run.add_argument("--out", default="build/run", help="output folder for executed notebooks and summary.json")
    run.add_argument("--timeout", type=float, default=None, help="seconds per cell (default: the profile's)")
    run.set_defaults(handler=_run)

    grade = commands.add_parser("grade", help="autograde an assignment's submissions (sandboxed, parallel)")
    try:
        from course.grade import add_arguments
    except ImportError:  # grading extras missing: the subcommand explains itself when run
        grade.add_argument("assignment")
    else:
        add_arguments(grade)
    grade.set_defaults(handler=_grade)

    serve = commands.add_parser("serve", help="serve models over HTTP with dynamic batching (FastAPI + uvicorn)")
    serve.add_argument(
        "--task",
        nargs="+",
        default=["classify", "embed", "summarize"],
        metavar="TASK",
        help="classify, embed, summarize, generate (default: the first three)",
    )
    serve.add_argument(
        "--model",
        action="append",
        metavar="[TASK=]NAME|DIR",
        help="model of a task, e.g. classify=runs/clf (plain DIR with one task); repeatable",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    serve.add_argument("--max-batch", type=int, default=32, help="most requests per model call (1: no batching)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait for a batch to fill")
    serve.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond this get 503")
    serve.add_argument("--timeout", type=float, default=30.0, help="seconds per request before 504")
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``course`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CourseError as error:
        print(f"course {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"course {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
