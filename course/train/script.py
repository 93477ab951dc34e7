"""Fine-tune from the command line, in one process or several.

One process (CPU or one GPU)::

    python -m course.train --steps 60 --batch-size 16

Several processes, e.g. one per GPU (``--batch-size`` is per process, so
the global batch is batch size x processes x accumulation)::

    torchrun --nproc_per_node 2 -m course.train --batch-size 8
    accelerate launch --multi_gpu --num_processes 2 -m course.train --batch-size 8

Both launchers start N copies of this script and tell each its ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` through environment variables.  The script
then joins a process group (NCCL between GPUs, gloo between CPU processes),
and :func:`course.train.loop.fit` wraps the model in
``DistributedDataParallel``: every process computes gradients on its share of
the batch, and they are averaged before each optimizer step, so all copies
of the model stay identical.

Traps, both checked on CPU machines:

* ``accelerate launch --cpu --num_processes 2`` starts ONE process (several
  CPU processes need mpirun there).  This script says so when it sees it; use
  ``torchrun`` or ``accelerate launch --multi_gpu`` on a CPU-only machine.
* Set ``OMP_NUM_THREADS`` so that processes x threads <= cores, or the
  processes fight over the cores (torchrun sets 1 and says so).

Each process writes ``OUT/rank<R>.json`` (what it did); process 0 also
evaluates and writes ``OUT/result.json`` and, with ``--save``, the model.

Launching from Python (notebook 03 does)::

    plan = launch_plan()                    # what THIS machine can run
    print(plan)                             # 2 CPU processes (gloo) on a 0- or 1-GPU machine
    print(shell_line(torchrun_command(plan, ["--steps", "10"])))
    run = launch(plan, ["--steps", "10"], out="multi-process-demo")
    run.ranks[1]["final_checksum"] == run.ranks[0]["final_checksum"]   # DDP kept the copies equal

One process per GPU is the rule, so a machine with one GPU cannot run a
2-process GPU job: :func:`launch_plan` then runs 2 CPU processes instead,
which teaches the same mechanics (ranks, sharded data, averaged gradients).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course.errors import CourseError


def build_parser() -> argparse.ArgumentParser:
    """Command-line options; defaults are the quick CPU settings of :class:`TrainConfig`."""
    from course.train.loop import TrainConfig

    d = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m course.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="course model name, hub id or folder (default: bundled MiniLM)")
    parser.add_argument("--dataset", default=None, help="course dataset name or hub id (default: bundled sentiment)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (several processes: auto or cpu)")
    parser.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="samples per micro-batch per process")
    parser.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    parser.add_argument("--max-length", type=int, default=d.max_length, help="tokens kept per text")
    parser.add_argument("--padding", default=d.padding, choices=["dynamic", "max_length"])
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    parser.add_argument("--precision", default=d.precision, choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--dropout", type=float, default=None, help="override the model's dropout (0 = deterministic)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--out", default="build/train", help="folder for rank*.json, result.json and the model")
    parser.add_argument("--save", action="store_true", help="save the fine-tuned model to OUT/model (process 0)")
    parser.add_argument("--expect-processes", type=int, default=None, help="fail unless this many processes run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--recipe",
        default="loop",
        choices=["loop", "trainer"],
        help="loop: course.train.loop.fit; trainer: the same run through transformers.Trainer",
    )
    return parser


def distributed_env() -> tuple[int, int, int]:
    """(rank, local rank, world size) as set by torchrun / accelerate launch; (0, 0, 1) when run plainly."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    return rank, local_rank, world_size


def launcher_warning(world_size: int) -> str | None:
    """The accelerate ``--cpu`` trap, detected: it sets ACCELERATE_USE_CPU but starts one process."""
    if world_size == 1 and os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true":
        return (
            "note: launched by 'accelerate launch --cpu', which runs ONE process whatever --num_processes says; "
            "for several CPU processes use torchrun --nproc_per_node N or accelerate launch --multi_gpu"
        )
    return None


def setup_device(requested: str, local_rank: int, world_size: int) -> tuple[Any, str]:
    """Pick this process's device and join the process group when there are several processes."""
    import torch
    import torch.distributed as dist

    from course.devices import choose_device

    if world_size == 1:
        choice = choose_device(requested)
        return choice.device, str(choice)
    use_cuda = requested != "cpu" and torch.cuda.is_available()
    if use_cuda and local_rank >= torch.cuda.device_count():
        raise CourseError(
            f"process {local_rank} has no GPU: {torch.cuda.device_count()} visible; lower --nproc_per_node"
        )
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend)
    return device, f"{device} (process {dist.get_rank()} of {world_size}, backend {backend})"


def parameter_checksum(model: Any) -> float:
    """Sum of all parameters in float64: equal on every process when DDP keeps copies in sync."""
    import torch

    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in model.parameters()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fine-tune; returns the exit code (2 with one line on a CourseError)."""
    args = build_parser().parse_args(argv)
    rank, local_rank, world_size = distributed_env()
    try:
        return train_from_args(args, rank, local_rank, world_size)
    except CourseError as error:
        print(f"course.train (process {rank}): error: {error}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Destroy the process group if one was created (clean exit under torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def train_from_args(args: argparse.Namespace, rank: int, local_rank: int, world_size: int) -> int:
    """Load, shard, train, report: the body of :func:`main`."""
    import torch

    from course.assets import load_dataset, load_model, load_tokenizer
    from course.train.data import make_loaders
    from course.train.loop import TrainConfig, evaluate, fit

    say = print if rank == 0 else (lambda *a, **k: None)
    warning = launcher_warning(world_size)
    if warning:
        print(warning, file=sys.stderr)
    if args.expect_processes is not None and args.expect_processes != world_size:
        raise CourseError(
            f"expected {args.expect_processes} processes but {world_size} started"
            + (" (accelerate launch --cpu runs one)" if warning else "")
        )
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        padding=args.padding,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        precision=args.precision,
        activation_checkpointing=args.activation_checkpointing,
        seed=args.seed,
    ).check()
    device, where = setup_device(args.device, local_rank, world_size)
    say(f"device: {where}; threads per process: {torch.get_num_threads()}")

    torch.manual_seed(config.seed)  # the same fresh head in every process
    dropout = (
        {}
        if args.dropout is None
        else {
            "hidden_dropout_prob": args.dropout,
            "attention_probs_dropout_prob": args.dropout,
            "classifier_dropout": None,
        }
    )
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, task="sequence-classification", **dropout)
    data = load_dataset(args.dataset)
    loaders = make_loaders(
        data,
        tokenizer,
        model,
        batch_size=config.batch_size,
        max_length=config.max_length,
        padding=config.padding,
        seed=config.seed,
        rank=rank,
        world_size=world_size,
    )
    initial = parameter_checksum(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.recipe == "trainer":
        return trainer_from_args(args, model, tokenizer, data, config, device, rank, world_size, out, initial)
    result = fit(model, loaders["train"], config, device=device, progress=not args.no_progress)

    report = {
        "rank": rank,
        "world_size": world_size,
        "device": str(device),
        "steps": len(result.history),
        "samples_this_process": result.samples // world_size,
        "initial_checksum": initial,
        "final_checksum": parameter_checksum(model),
        "losses": [row["loss"] for row in result.history],
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    if rank == 0:
        split = "validation" if "validation" in loaders else "test"
        scores = evaluate(model, loaders[split], device)
        summary = {
            "world_size": world_size,
            "global_batch": config.samples_per_step * world_size,
            "steps": config.steps,
            "samples_per_s": result.samples_per_s,
            "seconds": result.seconds,
            "precision": result.precision,
            "optimizer": result.optimizer,
            "peak_memory_mb": result.peak_memory_mb,
            "final_loss": result.final_loss,
            "eval_split": split,
            "eval": scores,
            "time": time.time(),
        }
        if args.save:
            from course.train.save import save_model

            summary["model"] = str(save_model(model, tokenizer, out / "model"))
        (out / "result.json").write_text(json.dumps(summary, indent=1))
        say(
            f"{world_size} process(es), {config.steps} steps, {result.samples_per_s:.1f} samples/s; "
            f"{split} loss {scores['loss']:.4f}, accuracy {scores['accuracy']:.3f} -> {out}"
        )
    return 0


def trainer_from_args(
    args: argparse.Namespace,
    model: Any,
    tokenizer: Any,
    data: Any,
    config: Any,
    device: Any,
    rank: int,
    world_size: int,
    out: Path,
    initial: float,
) -> int:
    """The same run through ``transformers.Trainer``, which does its own DDP and data sharding."""
    from course.train.data import tokenize
    from course.train.trainer import trainer_finetune

    train = tokenize(
        data["train"], tokenizer, config.max_length, padding=config.padding, num_labels=model.config.num_labels
    )
    run = trainer_finetune(
        model,
        tokenizer,
        train,
        config,
        output_dir=out / "trainer",
        device=device,
        progress=not args.no_progress and rank == 0,
    )
    report = {
        "rank": rank,
        "world_size": world_size,
        "recipe": "trainer",
        "steps": run.trainer.state.global_step,
        "initial_checksum": initial,
        "final_checksum": parameter_checksum(model),
        "losses": [row["loss"] for row in run.history],
        "samples_per_s": run.samples_per_s,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    return 0


# ------------------------------------------------------------------ launching


@dataclass(frozen=True)
class LaunchPlan:
    """How many processes this machine can run, on which device, and why."""

    processes: int
    device: str  # "cuda" (one GPU per process) or "cpu"
    threads_per_process: int
    reason: str

    @property
    def backend(self) -> str:
        """The process group's transport: NCCL between GPUs, gloo between CPU processes."""
        return "nccl" if self.device == "cuda" else "gloo"

    def __str__(self) -> str:
        kind = "GPU" if self.device == "cuda" else "CPU"
        return f"{self.processes} {kind} processes (backend {self.backend}, {self.threads_per_process} thread(s) each)"


def launch_plan(processes: int | None = None, device: str = "auto", cpus: int | None = None) -> LaunchPlan:
    """Choose a multi-process launch this machine can actually run.

    * 2 or more GPUs and ``device`` auto/cuda: one process per GPU
      (``processes`` of them, default all GPUs).
    * Fewer than 2 GPUs (or ``device="cpu"``): CPU processes with the gloo
      backend (default 2), each with ``cores // processes`` threads so they do
      not fight over the cores.
    * ``device="cuda"`` with fewer GPUs than processes: one CourseError line.
    """
    import torch

    from course.validate import check_batch_size

    if processes is not None:
        check_batch_size(processes, "processes")
    if device not in ("auto", "cuda", "cpu"):
        raise CourseError(f"unknown device '{device}' for a multi-process launch: use auto, cuda or cpu")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cores = cpus or os.cpu_count() or 1
    wanted = processes or (gpus if device != "cpu" and gpus >= 2 else 2)
    if device != "cpu" and gpus >= 2:
        if wanted > gpus:
            if device == "cuda":
                raise CourseError(f"{wanted} processes need {wanted} GPUs, {gpus} visible: use --nproc_per_node {gpus}")
        else:
            return LaunchPlan(wanted, "cuda", max(1, cores // wanted), f"{gpus} GPUs visible: one process per GPU")
    if device == "cuda":
        raise CourseError(
            f"{wanted} GPU processes need {wanted} GPUs, {gpus} visible (one process per GPU): use device cpu"
        )
    why = (
        "asked for CPU processes"
        if device == "cpu"
        else f"{gpus} GPU(s) visible and one process per GPU is the rule, so the processes share the CPU"
    )
    return LaunchPlan(wanted, "cpu", max(1, cores // wanted), why)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now: the rendezvous of the process group."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(plan: LaunchPlan, args: Sequence[str], port: int | None = None) -> list[str]:
    """``torchrun --nproc_per_node N -m course.train ARGS --device D`` as an argument list.

    ``python -m torch.distributed.run`` is what the ``torchrun`` command runs;
    calling it through this Python makes sure the processes use this venv.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(plan.processes)]
    if port is not None:
        command += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    return [*command, "-m", "course.train", *args, "--device", plan.device]


def accelerate_command(plan: LaunchPlan, args: Sequence[str], port: int | None = None) -> list[str]:
    """The same launch through ``accelerate launch`` (``--multi_gpu`` even for CPU processes: see the traps).

    The flags given here are what ``accelerate config`` would otherwise store
    in ``~/.cache/huggingface/accelerate/default_config.yaml``.
    """
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(plan.processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    if port is not None:
        command += ["--main_process_port", str(port)]
    return [*command, "-m", "course.train", *args, "--device", plan.device]


def shell_line(command: Sequence[str], width: int | None = None) -> str:
    """A launch command as a student would type it (``torchrun``/``accelerate launch``, not the venv's python).

    With ``width``, long commands are broken into shell continuation lines
    (``\\`` at the end) of at most about ``width`` characters, between words.
    """
    words = list(command)
    for prefix, name in (
        (["-m", "torch.distributed.run"], ["torchrun"]),
        (["-m", "accelerate.commands.launch"], ["accelerate", "launch"]),
    ):
        if words[1:3] == prefix:
            words = [*name, *words[3:]]
    if width is None:
        return shlex.join(words)
    lines, current = [], ""
    for word in (shlex.quote(word) for word in words):
        if current and len(current) + 1 + len(word) > width - 2:
            lines.append(current)
            current = "    " + word
        else:
            current = f"{current} {word}" if current else word
    return " \\\n".join([*lines, current])


@dataclass
class LaunchResult:
    """What a launched run left behind: every process's report and process 0's result."""

    plan: LaunchPlan
    command: list[str]
    seconds: float
    ranks: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    stdout: str = ""

    @property
    def in_sync(self) -> bool:
        """True when every process ended with the same weights (DDP's promise)."""
        sums = [rank["final_checksum"] for rank in self.ranks]
        return bool(sums) and max(sums) - min(sums) <= 1e-9 * max(1.0, abs(sums[0]))


def read_results(out: str | Path, world_size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``OUT/rank<R>.json`` for every process and ``OUT/result.json``; one CourseError if any is missing."""
    out = Path(out)
    try:
        ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(world_size)]
        result = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    except (OSError, json.JSONDecodeError) as error:
        raise CourseError(f"the launched run left no complete report in {out}: {error}") from None
    if any(rank.get("world_size") != world_size for rank in ranks):
        sizes = [rank.get("world_size") for rank in ranks]
        raise CourseError(f"expected reports of {world_size} processes in {out}, found world sizes {sizes}")
    return ranks, result


def launch(
    plan: LaunchPlan, args: Sequence[str], out: str | Path, *, launcher: str = "torchrun", timeout: float = 900
) -> LaunchResult:
    """Run ``course.train`` in ``plan.processes`` processes and read what each did.

    ``args`` are :func:`build_parser` options (``--out`` and ``--device`` are
    added here).  A failed run raises one CourseError line with the error the
    processes printed.
    """
    out = Path(out)
    args = [*args, "--out", str(out), "--expect-processes", str(plan.processes)]
    builders = {"torchrun": torchrun_command, "accelerate": accelerate_command}
    if launcher not in builders:
        raise CourseError(f"unknown launcher '{launcher}': use torchrun or accelerate")
    command = builders[launcher](plan, args, port=_free_port())
    env = {**os.environ, "OMP_NUM_THREADS": str(plan.threads_per_process), "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CourseError(f"the {plan.processes}-process run took over {timeout:.0f} s: lower --steps") from None
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        error = _last_error(done.stderr)
        raise CourseError(f"the {plan.processes}-process run failed (exit {done.returncode}): {error}") from None
    ranks, result = read_results(out, plan.processes)
    return LaunchResult(plan, command, seconds, ranks, result, done.stdout)


def _last_error(stderr: str) -> str:
    """The most telling line of a failed launch: course.train's own error, else the last non-empty line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    own = [line for line in lines if "course.train (process" in line and "error:" in line]
    return (own or lines or ["no error output"])[-1][:300]
