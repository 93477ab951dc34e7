"""Benchmark: ``course grade`` against plain ``nbgrader autograde``, side by side.

    .venv/bin/python bench/bench_grade.py [--students 24] [--jobs 1,2] [--out build/bench_grade.json]
                                          [--process-tree-limits auto|off]

Builds one class of honest submissions of the fixture assignment (it
imports torch: correct answers, a mistake, torch warnings, untouched
stubs), copies it, and grades the copies in the same run:

1. plain ``nbgrader autograde`` (serial, no sandbox) -- the baseline;
2. ``course grade --jobs N`` for each N (sandbox on when running as root).

It checks that both give the same per-test scores (except the one
deliberate difference: a warning on stderr does not zero a correct answer)
and prints the ratio, plus where the time goes: a plain kernel's start,
its ``import torch``, the cells, and nbgrader's own steps; and for
``course grade`` the once-per-run costs (checks, zygote preload) and the
per-submission phases from the JSON results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "grade"))

import classroom as cls  # noqa: E402
from nbgrader_harness import read_scores  # noqa: E402


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command, return (seconds, completed process); fail loudly on error."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=cls.env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc


async def _plain_kernel_phases(notebook: Path) -> dict[str, float]:
    """One fresh ipykernel on a submission: start, import torch, the other cells, shutdown."""
    import nbformat
    from jupyter_client.manager import AsyncKernelManager

    nb = nbformat.read(notebook, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    phases = {}
    start = time.perf_counter()
    km = AsyncKernelManager(kernel_name="python3")
    await km.start_kernel(cwd=str(notebook.parent))
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=120)
    phases["kernel_start"] = time.perf_counter() - start
    quiet = {"output_hook": lambda msg: None}
    start = time.perf_counter()
    await kc.execute_interactive("import torch", timeout=120, **quiet)
    phases["import_torch"] = time.perf_counter() - start
    start = time.perf_counter()
    for source in code:
        await kc.execute_interactive(source, timeout=120, **quiet)
    phases["cells"] = time.perf_counter() - start
    start = time.perf_counter()
    kc.stop_channels()
    await km.shutdown_kernel()
    phases["shutdown"] = time.perf_counter() - start
    return phases


def plain_kernel_phases(notebook: Path, samples: int = 5) -> dict[str, float]:
    """Median phases over a few fresh kernels."""
    runs = [asyncio.run(_plain_kernel_phases(notebook)) for _ in range(samples)]
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def ours_per_submission(course: Path) -> dict[str, float]:
    """Mean per-submission phases from course grade's JSON results."""
    results = [json.loads(p.read_text()) for p in (course / "results" / cls.ASSIGNMENT / "submissions").glob("*.json")]
    keys = ("kernel_start", "execute", "autograde", "feedback", "total", "gradebook_held")
    return {k: statistics.mean(r["timing"].get(k, 0.0) for r in results) for k in keys}


def _stderr_only(course: Path, student: str, grade_id: str) -> bool:
    """Did nbgrader's autograded cell have stderr output and no error (its 0 for a warning)?"""
    import nbformat

    nb = nbformat.read(course / "autograded" / student / cls.ASSIGNMENT / f"{cls.ASSIGNMENT}.ipynb", as_version=4)
    outputs = nb.cells[cls.cell_index(nb, grade_id)].outputs
    kinds = {(o.output_type, o.get("name")) for o in outputs}
    return ("stream", "stderr") in kinds and not any(o.output_type == "error" for o in outputs)


def compare_scores(plain: Path, ours: Path, students: list[str]) -> tuple[list[str], int]:
    """Unexpected differences between nbgrader's and course grade's per-test scores.

    Returns (unexpected differences, count of the deliberate stderr ones).
    """
    differences, stderr_rule = [], 0
    for student in students:
        theirs = read_scores(plain, cls.ASSIGNMENT, student)["grades"]
        result = json.loads((ours / "results" / cls.ASSIGNMENT / "submissions" / f"{student}.json").read_text())
        mine = {c["grade_id"]: c["score"] for c in result["notebooks"][0]["cells"]}
        for grade_id in theirs:
            if theirs[grade_id] == mine.get(grade_id):
                continue
            if theirs[grade_id] == 0 and _stderr_only(plain, student, grade_id):
                stderr_rule += 1
            else:
                ours_score = mine.get(grade_id)
                differences.append(f"{student}/{grade_id}: nbgrader {theirs[grade_id]}, course grade {ours_score}")
    return differences, stderr_rule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=24)
    parser.add_argument("--jobs", default="1,2", help="comma-separated worker counts for course grade")
    parser.add_argument("--out", default=str(REPO / "build" / "bench_grade.json"))
    parser.add_argument("--keep", action="store_true", help="keep the course copies")
    parser.add_argument(
        "--process-tree-limits",
        choices=["auto", "off"],
        default="auto",
        help="c.CourseGrade.process_tree_limits for course grade (off: no cgroups, to measure their cost)",
    )
    args = parser.parse_args(argv)
    jobs = [int(j) for j in args.jobs.split(",")]
    sandbox = os.geteuid() == 0
    cores = len(os.sched_getaffinity(0))

    work = Path(tempfile.mkdtemp(prefix="bench-grade-"))
    try:
        base = cls.new_course(work / "base", f'c.CourseGrade.process_tree_limits = "{args.process_tree_limits}"')
        expected = cls.honest_class(base, args.students)
        copies = {name: work / name for name in ["plain", *[f"jobs{j}" for j in jobs]]}
        for dest in copies.values():
            shutil.copytree(base, dest)

        correct = cls.fill_solutions(cls.release_notebook(base), cls.CORRECT, work / "probe" / "ps_fixture.ipynb")
        shutil.copy(base / "source" / cls.ASSIGNMENT / "labels.txt", correct.parent)

        report = {"students": args.students, "cores": cores, "sandbox": sandbox, "runs": {}}
        phases = plain_kernel_phases(correct)
        plain_s, _ = timed([sys.executable, "-m", "nbgrader", "autograde", cls.ASSIGNMENT], copies["plain"])
        report["runs"]["nbgrader autograde"] = {"seconds": plain_s}
        for j in jobs:
            cmd = [
                sys.executable,
                "-m",
                "course.grade",
                cls.ASSIGNMENT,
                "--course-dir",
                str(copies[f"jobs{j}"]),
                "--jobs",
                str(j),
                "--quiet",
                *([] if sandbox else ["--no-sandbox"]),
            ]
            seconds, _ = timed(cmd, copies[f"jobs{j}"])
            run = json.loads((copies[f"jobs{j}"] / "results" / cls.ASSIGNMENT / "run.json").read_text())
            report["runs"][f"course grade --jobs {j}"] = {
                "seconds": seconds,
                "speedup": plain_s / seconds,
                "per_submission": ours_per_submission(copies[f"jobs{j}"]),
                "timeline": run["timeline"],
                "kernel_limits": run.get("kernel_limits", ""),
            }
        differences, stderr_rule = compare_scores(copies["plain"], copies[f"jobs{jobs[-1]}"], sorted(expected))
        report["score_differences"] = differences
        report["stderr_rule_differences"] = stderr_rule
        report["plain_phases"] = {**phases, "per_submission": plain_s / args.students}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"class: {args.students} submissions of {cls.ASSIGNMENT} (imports torch); {cores} cores; "
        f"sandbox {'on' if sandbox else 'OFF (not root)'}"
    )
    limits = {run.get("kernel_limits") for run in report["runs"].values() if "kernel_limits" in run}
    print(f"kernel limits: {'; '.join(sorted(limits))}")
    for name, run in report["runs"].items():
        extra = f"  {run['speedup']:.1f}x faster" if "speedup" in run else ""
        print(f"  {name:<26}{run['seconds']:7.1f} s  {run['seconds'] / args.students:5.2f} s/submission{extra}")
    if len(jobs) > 1:
        first = report["runs"][f"course grade --jobs {jobs[0]}"]
        last = report["runs"][f"course grade --jobs {jobs[-1]}"]
        print(f"  scaling --jobs {jobs[0]} -> {jobs[-1]}: {first['seconds'] / last['seconds']:.2f}x")
    p = report["plain_phases"]
    rest = p["per_submission"] - p["kernel_start"] - p["import_torch"] - p["cells"] - p["shutdown"]
    print(
        f"where the time goes, plain nbgrader, per submission ({p['per_submission']:.2f} s): "
        f"kernel start {p['kernel_start']:.2f} s, import torch {p['import_torch']:.2f} s, "
        f"cells {p['cells']:.2f} s, kernel shutdown {p['shutdown']:.2f} s, the rest (nbgrader's steps) {rest:.2f} s"
    )
    for name, run in report["runs"].items():
        if "per_submission" in run:
            s, t = run["per_submission"], run["timeline"]
            steps = s["autograde"] - s["kernel_start"] - s["execute"]
            print(
                f"{name}, per submission (one worker's view): kernel start {s['kernel_start']:.2f} s, "
                f"cells {s['execute']:.2f} s, nbgrader steps {steps:.2f} s "
                f"(of which gradebook lock held {s['gradebook_held']:.2f} s), "
                f"feedback {s['feedback']:.2f} s; once: checks {t.get('checks_done', 0):.1f} s, "
                f"zygote ready at {t.get('zygote_ready', 0):.1f} s (preload {t.get('zygote_preload') or 0:.1f} s)"
            )
    print(
        f"scores: identical to nbgrader except {stderr_rule} test(s) where only a warning on stderr made "
        f"nbgrader give 0; other differences: {differences or 'none'}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
