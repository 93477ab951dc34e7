#!/usr/bin/env bash
# GPU check of the course: on a machine with an NVIDIA GPU and this project's
# packages (the course image, or a venv with `pip install .`), run
#
#   doctor      course doctor --json               -> doctor.json
#   notebooks   course run --profile full          -> run/summary.json + executed notebooks
#   throughput  matmul TFLOP/s (fp32, tf32, bf16, fp16 against fp32 and the CPU)
#               and pipeline sentences/s (batch 32 against batch 1, GPU
#               against CPU), each ratio against a baseline of the same run
#                                                  -> throughput.json
#   benches     each command of $GPU_CHECK_BENCHES, ';'-separated, run from
#               the repository (default: bench/bench_doctor.py --runs 3 --json)
#                                                  -> bench-NAME.json
#
# and write everything, with summary.json (one entry per step: command, exit
# code, seconds, status) and summary.txt, under one folder: --out DIR, else
# $OUT, else ./build/gpu-check. The whole check has a time budget
# (GPU_CHECK_BUDGET_S, default 480 s: well under 10 minutes); each step is cut
# off at its share and reported as "timeout".
#
# In the course image the script is at /opt/course/bench/gpu_check.sh:
#   docker run --rm --gpus all --shm-size=2g -v "$PWD/gpu-check:/out" -e OUT=/out \
#     course:latest bash /opt/course/bench/gpu_check.sh
#
# Usage: bench/gpu_check.sh [--out DIR] [--cpu] [--dry-run] [--only STEPS]
#   --cpu      no GPU: smoke profile, small sizes, CUDA hidden (a rehearsal
#              of the script on any machine)
#   --dry-run  print the commands, check that they exist, run nothing
#   --only     comma-separated subset of: doctor,notebooks,throughput,benches
#
# Exit status: 0 all steps passed, 1 a step failed or timed out, 2 bad usage
# or a missing command. The doctor's warnings (exit 1) count as passed; its
# errors (exit 2: no GPU visible, no NVIDIA runtime, too little /dev/shm, a
# driver too old for the image's CUDA) fail the check.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
python=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET_S:-480}
out=${OUT:-}
mode=gpu
dry_run=0
only="doctor,notebooks,throughput,benches"

usage() { sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --out) out=${2:?--out needs a folder}; shift 2 ;;
        --out=*) out=${1#--out=}; shift ;;
        --cpu) mode=cpu; shift ;;
        --dry-run) dry_run=1; shift ;;
        --only) only=${2:?--only needs a list of steps}; shift 2 ;;
        --only=*) only=${1#--only=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
out=${out:-build/gpu-check}

for step in ${only//,/ }; do
    case $step in
        doctor|notebooks|throughput|benches) ;;
        *) echo "gpu_check: unknown step '$step' in --only (doctor, notebooks, throughput, benches)" >&2; exit 2 ;;
    esac
done
if ! [[ $budget =~ ^[0-9]+$ ]] || (( budget < 60 )); then
    echo "gpu_check: GPU_CHECK_BUDGET_S='$budget' must be a whole number of seconds >= 60" >&2
    exit 2
fi
if ! command -v "$python" >/dev/null 2>&1; then
    echo "gpu_check: no Python interpreter '$python' (set PYTHON=/path/to/python)" >&2
    exit 2
fi
if ! command -v timeout >/dev/null 2>&1; then
    echo "gpu_check: the 'timeout' command (coreutils) is missing" >&2
    exit 2
fi

wants() { [[ ",$only," == *",$1,"* ]]; }

if [[ $mode == cpu ]]; then
    profile=smoke
    export CUDA_VISIBLE_DEVICES=""
    matmul_sizes="128 256"
    texts=16
else
    profile=full
    matmul_sizes="2048 4096 8192"
    texts=512
fi

# Cheap benchmarks of bench/ worth a line in the GPU report, as commands run
# from the repository; a script missing from this checkout is skipped.
# (bench_foundation.py re-runs the smoke notebooks: the notebooks step has
# that covered.)
benches=${GPU_CHECK_BENCHES-"bench/bench_doctor.py --runs 3 --json"}
IFS=';' read -r -a bench_commands <<<"$benches"

# Shares of the budget, in percent. The notebooks get what the steps after
# them do not reserve.
declare -A share=([doctor]=10 [notebooks]=0 [throughput]=20 [benches]=10)

started=$(date +%s)
steps_file=""
failed=0

remaining() { echo $(( budget - ($(date +%s) - started) )); }

# run_step NAME LOGFILE ACCEPTED_CODES LABEL CMD...
#   runs CMD with the step's share of the budget, its stdout into LOGFILE
#   (stderr into LOGFILE.err), and records the outcome under LABEL (the
#   command as a person would type it, on one line).
run_step() {
    local name=$1 log=$2 accepted=$3 label=$4
    shift 4
    local left limit
    left=$(remaining)
    limit=$(( budget * share[$name] / 100 ))
    if [[ $name == notebooks ]]; then
        local reserve=0
        wants throughput && reserve=$(( reserve + budget * share[throughput] / 100 ))
        wants benches && reserve=$(( reserve + budget * share[benches] / 100 ))
        limit=$(( left - reserve ))
    fi
    (( limit > left )) && limit=$left
    if (( limit < 10 )); then
        record "$name" "$label" -1 0 "skipped: time budget spent" "$log"
        failed=1
        return
    fi
    echo "== $name (limit ${limit}s): $label"
    local t0 code status
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$out/$log" 2>"$out/$log.err"
    code=$?
    if [[ $code == 124 || $code == 137 ]]; then
        status="timeout after ${limit}s"
    elif [[ ",$accepted," == *",$code,"* ]]; then
        status=passed
    else
        status=failed
    fi
    [[ $status == passed ]] || failed=1
    record "$name" "$label" "$code" $(( $(date +%s) - t0 )) "$status" "$log"
    echo "   $status (exit $code, $(( $(date +%s) - t0 ))s)"
    if [[ $status != passed ]]; then tail -n 5 "$out/$log.err" | sed 's/^/   | /'; fi
}

# One tab-separated line per step, turned into JSON at the end.
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$steps_file"
}

throughput_code=$(cat <<'PY'
"""Throughput of this machine, each figure with a baseline from the same run."""
import json
import os
import sys

import torch

from course.pipelines import make_pipeline, throughput_sweep
from course.throughput import matmul_tflops

mode, sizes, n_texts = sys.argv[1], [int(n) for n in sys.argv[2].split()], int(sys.argv[3])
gpu = torch.cuda.is_available()
if mode == "gpu" and not gpu:
    sys.exit("no CUDA device visible: run `course doctor` for the cause, or use --cpu to rehearse")
device = "cuda" if gpu else "cpu"
report = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__, "matmul": [], "pipeline": [], "ratios": {}}

# Matmul: fp32 is the baseline; tf32/bf16/fp16 are what mixed precision buys.
largest = max(sizes)
for n in sizes:
    report["matmul"].append({"device": device, "n": n, "dtype": "float32", "tflops": matmul_tflops(n, device, "float32")})
if gpu:
    torch.backends.cuda.matmul.allow_tf32 = True
    tf32 = matmul_tflops(largest, device, "float32")
    torch.backends.cuda.matmul.allow_tf32 = False
    report["matmul"].append({"device": device, "n": largest, "dtype": "tf32", "tflops": tf32})
    for dtype in ("bfloat16", "float16"):
        report["matmul"].append({"device": device, "n": largest, "dtype": dtype, "tflops": matmul_tflops(largest, device, dtype)})
    cpu_n = min(sizes)
    cpu = matmul_tflops(cpu_n, "cpu", "float32", repeats=1)
    report["matmul"].append({"device": "cpu", "n": cpu_n, "dtype": "float32", "tflops": cpu})
    gpu_same = next(r["tflops"] for r in report["matmul"] if r["n"] == cpu_n and r["dtype"] == "float32")
    report["ratios"][f"matmul gpu/cpu fp32 n={cpu_n}"] = gpu_same / cpu
fp32 = next(r["tflops"] for r in report["matmul"] if r["n"] == largest and r["dtype"] == "float32")
for row in report["matmul"]:
    if row["n"] == largest and row["dtype"] != "float32":
        report["ratios"][f"matmul {row['dtype']}/fp32 n={largest}"] = row["tflops"] / fp32

# Pipeline: the bundled MiniLM encoder; batch 1 is the baseline.
texts = [f"Sentence number {i} about GPUs, batching and padding in a course." for i in range(n_texts)]
pipe, _ = make_pipeline("feature-extraction", device=device)
rows = throughput_sweep(pipe, texts, batch_sizes=(1, 8, 32))
for row in rows:
    report["pipeline"].append({"device": device, **row})
by_batch = {row["batch_size"]: row["sentences_per_s"] for row in rows}
report["ratios"]["pipeline batch32/batch1"] = by_batch[32] / by_batch[1]
if gpu:
    cpu_pipe, _ = make_pipeline("feature-extraction", device="cpu")
    cpu_rows = throughput_sweep(cpu_pipe, texts[:64], batch_sizes=(32,))
    report["pipeline"].append({"device": "cpu", **cpu_rows[0]})
    report["ratios"]["pipeline gpu/cpu batch32"] = by_batch[32] / cpu_rows[0]["sentences_per_s"]

json.dump(report, sys.stdout, indent=2)
for name, ratio in report["ratios"].items():
    print(f"{name}: {ratio:.2f}x", file=sys.stderr)
PY
)

throughput_label="$python -c <matmul_tflops, make_pipeline, throughput_sweep> $mode '$matmul_sizes' $texts"

plan() {
    wants doctor && echo "doctor: $python -m course doctor --json"
    wants notebooks && echo "notebooks: $python -m course run --profile $profile --out $out/run"
    wants throughput && echo "throughput: $throughput_label"
    if wants benches; then
        local command
        for command in "${bench_commands[@]}"; do
            [[ -n ${command// } ]] && echo "benches: $python ${command# }"
        done
    fi
    return 0
}

if (( dry_run )); then
    echo "gpu_check: dry run ($mode, budget ${budget}s, output $out)"
    plan
    missing=0
    "$python" -c "import course.cli" 2>/dev/null || { echo "gpu_check: 'import course.cli' fails with $python" >&2; missing=1; }
    if wants benches; then
        for command in "${bench_commands[@]}"; do
            read -r -a words <<<"$command"
            (( ${#words[@]} )) || continue
            [[ -f $repo/${words[0]} ]] || { echo "gpu_check: benchmark ${words[0]} not found" >&2; missing=1; }
        done
    fi
    exit $(( missing ? 2 : 0 ))
fi

mkdir -p "$out" || { echo "gpu_check: cannot create $out" >&2; exit 2; }
out=$(cd "$out" && pwd)
steps_file=$out/.steps.tsv
: >"$steps_file"
cd "$repo" || exit 2
echo "gpu_check: $mode check, budget ${budget}s, writing $out"
plan >"$out/plan.txt"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available" >>"$out/nvidia-smi.txt"

if wants doctor; then
    # 0 fine, 1 warnings; 2 errors (the doctor names no GPU, no NVIDIA runtime, small /dev/shm).
    run_step doctor doctor.json 0,1 "$python -m course doctor --json" \
        "$python" -m course doctor --json
fi
if wants notebooks; then
    run_step notebooks run.log 0 "$python -m course run --profile $profile --out $out/run" \
        "$python" -m course run --profile "$profile" --out "$out/run"
fi
if wants throughput; then
    run_step throughput throughput.json 0 "$throughput_label" \
        "$python" -c "$throughput_code" "$mode" "$matmul_sizes" "$texts"
fi
if wants benches; then
    for command in "${bench_commands[@]}"; do
        read -r -a words <<<"$command"
        (( ${#words[@]} )) || continue
        if [[ -f ${words[0]} ]]; then
            run_step benches "bench-$(basename "${words[0]}" .py).json" 0 "$python ${words[*]}" \
                "$python" "${words[@]}"
        else
            record benches "$python $command" -1 0 "skipped: ${words[0]} not in this checkout" "-"
        fi
    done
fi

"$python" - "$out" "$mode" "$profile" "$budget" "$(( $(date +%s) - started ))" <<'PY'
import json
import sys
from pathlib import Path

out, mode, profile, budget, elapsed = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
steps = []
for line in (out / ".steps.tsv").read_text().splitlines():
    name, command, code, seconds, status, log = line.split("\t")
    steps.append({"step": name, "command": command, "exit_code": int(code), "seconds": int(seconds), "status": status, "output": log})


def load(name):
    path = out / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


summary = {
    "mode": mode,
    "profile": profile,
    "budget_s": budget,
    "elapsed_s": elapsed,
    "passed": all(step["status"] == "passed" for step in steps),
    "steps": steps,
    "doctor": load("doctor.json"),
    "notebooks": load("run/summary.json"),
    "throughput": load("throughput.json"),
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
lines = [f"GPU check ({mode}, profile {profile}): {'PASSED' if summary['passed'] else 'FAILED'} in {elapsed}s of {budget}s"]
lines += [f"  {s['step']:<11}{s['status']:<28}{s['seconds']:>5}s  {s['command']}" for s in steps]
for name, ratio in ((summary["throughput"] or {}).get("ratios") or {}).items():
    lines.append(f"  {name}: {ratio:.2f}x")
(out / "summary.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
rm -f "$steps_file"
exit "$failed"
