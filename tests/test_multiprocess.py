"""``python -m course.train`` under torchrun and accelerate launch, with 2 CPU processes (gloo).

With dropout off, 2 processes with batch 4 each must train exactly like 1
process with batch 8: the DistributedSampler gives the two processes the
halves of the single process's batches, and DDP averages their gradients.
So every step's loss must agree, and both processes must end with the same
weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

COMMON = ["--steps", "4", "--max-length", "32", "--dropout", "0", "--device", "cpu", "--no-progress", "--seed", "1"]


def free_port() -> int:
    """A TCP port nobody listens on right now (for the process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(launcher: list[str], args: list[str], out: Path) -> subprocess.CompletedProcess:
    """Run ``[launcher] -m course.train ARGS --out OUT`` with one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, *launcher, "-m", "course.train", *args, "--out", str(out)]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=out.parent)


def torchrun(n: int) -> list[str]:
    return ["-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", str(free_port())]


def accelerate_launch(mode: str, *more: str) -> list[str]:
    """``accelerate launch MODE`` asking for 2 processes, with the flags ``accelerate config`` would otherwise store.

    Spelled out here rather than taken from ``course.train.script.accelerate_command``:
    these tests prove what accelerate itself does with the flags (``--cpu`` starts ONE
    process whatever ``--num_processes`` says, ``--multi_gpu`` starts two on a CPU machine),
    which is what the course's launcher relies on.
    """
    flags = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return ["-m", "accelerate.commands.launch", mode, *flags, *more]


def reports(out: Path, world_size: int) -> list[dict]:
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(world_size)]


def check(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, batch 8: the reference run for the plain loop."""
    out = tmp_path_factory.mktemp("mp") / "single"
    check(run([], [*COMMON, "--batch-size", "8"], out))
    return out


def test_torchrun_two_processes_train_like_one(single, tmp_path):
    out = tmp_path / "two"
    check(run(torchrun(2), [*COMMON, "--batch-size", "4", "--expect-processes", "2"], out))
    rank0, rank1 = reports(out, 2)
    (alone,) = reports(single, 1)
    for rank, report in enumerate((rank0, rank1)):
        assert (report["rank"], report["world_size"], report["steps"]) == (rank, 2, 4)
        assert report["samples_this_process"] == 16  # 4 steps x batch 4: each process did half the work
        assert report["final_checksum"] != pytest.approx(report["initial_checksum"], abs=1e-6)  # it trained
    assert rank0["final_checksum"] == pytest.approx(rank1["final_checksum"], rel=1e-12)  # DDP kept them in sync
    assert rank0["losses"] == pytest.approx(alone["losses"], rel=1e-4)
    assert rank0["final_checksum"] == pytest.approx(alone["final_checksum"], abs=1e-3)
    two, one = (json.loads((folder / "result.json").read_text()) for folder in (out, single))
    assert (two["world_size"], one["world_size"]) == (2, 1)
    assert two["global_batch"] == one["global_batch"] == 8
    assert two["eval"]["loss"] == pytest.approx(one["eval"]["loss"], rel=1e-4)
    assert two["eval"]["accuracy"] == pytest.approx(one["eval"]["accuracy"], abs=1 / 120)


def test_trainer_under_torchrun_logs_the_single_process_loss(tmp_path):
    """average_tokens_across_devices=False: 2 processes do not report (and train on) twice the loss."""
    one_out, two_out = tmp_path / "trainer1", tmp_path / "trainer2"
    check(run([], [*COMMON, "--recipe", "trainer", "--steps", "2", "--batch-size", "8"], one_out))
    check(run(torchrun(2), [*COMMON, "--recipe", "trainer", "--steps", "2", "--batch-size", "4"], two_out))
    (alone,) = reports(one_out, 1)
    rank0, rank1 = reports(two_out, 2)
    assert len(rank0["losses"]) == 2
    assert rank0["losses"][0] == pytest.approx(alone["losses"][0], rel=1e-4)
    assert 0.5 < rank0["losses"][0] < 0.9  # ~ln 2 for a fresh 2-label head, not 2 x ln 2
    assert rank0["final_checksum"] == pytest.approx(rank1["final_checksum"], rel=1e-12)


def test_accelerate_launch_multi_gpu_starts_two_cpu_processes(tmp_path):
    out = tmp_path / "accelerate"
    launcher = accelerate_launch("--multi_gpu", "--main_process_port", str(free_port()))
    check(run(launcher, [*COMMON, "--steps", "2", "--batch-size", "4", "--expect-processes", "2"], out))
    assert [report["world_size"] for report in reports(out, 2)] == [2, 2]


def test_accelerate_launch_cpu_runs_one_process_and_the_script_says_so(tmp_path):
    out = tmp_path / "accelerate-cpu"
    done = run(accelerate_launch("--cpu"), [*COMMON, "--expect-processes", "2"], out)
    assert done.returncode != 0
    assert "runs ONE process whatever --num_processes says" in done.stderr
    assert "error: expected 2 processes but 1 started" in done.stderr


def test_launch_runs_what_this_machine_can_and_reads_every_process(tmp_path):
    """What notebook 03 calls: a plan for this machine (2 CPU processes here), torchrun, the reports read back."""
    from course.train.script import launch, launch_plan

    plan = launch_plan(device="cpu")
    run = launch(
        plan,
        ["--steps", "2", "--batch-size", "4", "--max-length", "32", "--dropout", "0", "--no-progress"],
        tmp_path / "launched",
    )
    assert [rank["rank"] for rank in run.ranks] == [0, 1]
    assert all(rank["world_size"] == 2 and rank["steps"] == 2 for rank in run.ranks)
    assert run.in_sync and run.result["global_batch"] == 8 and run.seconds > 0
    assert "2 process(es), 2 steps" in run.stdout
