"""How long does ``course doctor`` take from a cold start, compared with ``import torch``?

The doctor has to import torch (that is how it learns the build, cuDNN, NCCL
and the arch list), so ``python -c "import torch"`` is the floor.  The ratio
printed at the end says what the doctor adds on top: probes, nvidia-smi,
package metadata, the default model's hash check.  Both are measured in the
same run, on the same machine, so the ratio is comparable across machines.

Each run is a fresh Python process ("cold": nothing imported yet).  One
untimed run of each warms the disk cache first, then the runs alternate so a
busy neighbour slows both sides alike.

    python bench/bench_doctor.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def doctor_command() -> list[str]:
    """``python -m course doctor --json``, or the doctor's own entry point if the CLI is absent."""
    if importlib.util.find_spec("course.__main__") is not None:
        return [sys.executable, "-m", "course", "doctor", "--json"]
    return [sys.executable, "-m", "course.doctor", "--json"]


def time_once(command: list[str], accepted: tuple[int, ...]) -> float:
    """Seconds for one run of ``command``; fails if its exit code is not accepted."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode not in accepted:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return elapsed


def measure(runs: int) -> dict:
    """Median cold-start seconds of the doctor and of the baseline, and their ratio."""
    baseline = [sys.executable, "-c", "import torch"]
    doctor = doctor_command()
    time_once(baseline, (0,))  # warm the disk cache, untimed
    time_once(doctor, (0, 1, 2))
    baseline_times, doctor_times = [], []
    for _ in range(runs):
        baseline_times.append(time_once(baseline, (0,)))
        doctor_times.append(time_once(doctor, (0, 1, 2)))  # 1 and 2 are findings, not crashes
    baseline_s, doctor_s = statistics.median(baseline_times), statistics.median(doctor_times)
    return {
        "runs": runs,
        "doctor_command": " ".join(Path(part).name if part == sys.executable else part for part in doctor),
        "doctor_s": round(doctor_s, 3),
        "baseline_import_torch_s": round(baseline_s, 3),
        "ratio": round(doctor_s / baseline_s, 2),
        "doctor_runs_s": [round(t, 3) for t in doctor_times],
        "baseline_runs_s": [round(t, 3) for t in baseline_times],
    }


def main() -> None:
    """Parse arguments, measure, print a short report (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command (default 5)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    result = measure(max(1, parser.parse_args().runs))
    if parser.parse_args().json:
        print(json.dumps(result, indent=2))
        return
    print(f"doctor   ({result['doctor_command']}): median {result['doctor_s']:.2f} s over {result['runs']} runs")
    print(f"baseline (python -c 'import torch'): median {result['baseline_import_torch_s']:.2f} s")
    print(f"ratio doctor / import torch: {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
