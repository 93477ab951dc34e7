"""Foundation figures: `course --help`, `import course`, and the smoke run of all notebooks.

Each figure is printed with a baseline measured in the same run:

- `course --help` and `import course` against `python -c pass` (interpreter start);
- `course run --profile smoke` per notebook against a floor notebook that only
  starts a kernel and imports torch + transformers (what no lesson can avoid).

Course goals (issue 2): smoke run <= 240 s in all, <= 2 GiB peak RSS per kernel,
`course --help` well under a second, `import course` loads no torch.

Usage:  .venv/bin/python bench/bench_foundation.py [--skip-run] [--out build/bench]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).parents[1]


def seconds(cmd: list[str], repeats: int = 5) -> float:
    """Median wall time of a command over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor_notebook(folder: Path) -> Path:
    """A notebook that does only what every lesson must: start a kernel, import torch + transformers."""
    cell = nbformat.v4.new_code_cell("device = 'cpu'")
    cell.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell("import torch, transformers")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "99_floor.ipynb"
    nbformat.write(nb, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-run", action="store_true", help="only time the CLI, not the notebooks")
    parser.add_argument("--out", default="build/bench", help="where the smoke run writes its notebooks")
    args = parser.parse_args()

    python = sys.executable
    base = seconds([python, "-c", "pass"])
    help_s = seconds([python, "-m", "course", "--help"])
    import_s = seconds([python, "-c", "import course, course.assets, course.run, course.doctor"])
    torch_s = seconds([python, "-c", "import torch"], repeats=3)
    loaded = subprocess.run(
        [python, "-c", "import sys, course.cli; course.cli.build_parser(); print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"python -c pass          {base:6.3f} s  (baseline)")
    print(f"course --help           {help_s:6.3f} s  ratio {help_s / base:4.1f}x baseline")
    print(f"import course + modules {import_s:6.3f} s  ratio {import_s / base:4.1f}x; torch loaded: {loaded}")
    print(f"python -c 'import torch' {torch_s:6.3f} s  (what `import course` avoids)")
    if args.skip_run:
        return

    from course.run import run_notebooks

    with tempfile.TemporaryDirectory() as tmp:
        floor = run_notebooks([str(floor_notebook(Path(tmp)))], out_dir=Path(tmp) / "out")["notebooks"][0]
    start = time.perf_counter()
    summary = run_notebooks(None, profile="smoke", out_dir=REPO / args.out)
    wall = time.perf_counter() - start
    print(f"\nfloor (kernel + import torch, transformers): {floor['seconds']:.1f} s, {floor['peak_rss_mb']:.0f} MB")
    print(f"{'notebook':<18}{'status':<8}{'seconds':>9}{'x floor':>9}{'peak MB':>9}{'x floor':>9}")
    for nb in summary["notebooks"]:
        print(
            f"{nb['name']:<18}{nb['status']:<8}{nb['seconds']:>9.1f}{nb['seconds'] / floor['seconds']:>9.1f}"
            f"{nb['peak_rss_mb']:>9.0f}{nb['peak_rss_mb'] / floor['peak_rss_mb']:>9.1f}"
        )
    worst = max(nb["peak_rss_mb"] for nb in summary["notebooks"])
    print(
        f"smoke run wall time {wall:.1f} s (goal <= 240 s: {'met' if wall <= 240 else 'MISSED'}); "
        f"largest kernel {worst:.0f} MB (goal <= 2048 MB: {'met' if worst <= 2048 else 'MISSED'})"
    )
    (REPO / args.out / "bench_foundation.json").write_text(
        json.dumps({"floor": floor, "wall_seconds": wall, "summary": summary}, indent=2)
    )


if __name__ == "__main__":
    main()
