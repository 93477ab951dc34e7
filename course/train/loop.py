"""A plain PyTorch training loop for sequence classification, to read top to bottom.

One optimizer step, in full::

    for micro_batch in micro_batches:                 # gradient accumulation
        with autocast:                                # mixed precision (or nullcontext)
            loss = model(**micro_batch).loss / len(micro_batches)
        scaler.scale(loss).backward()                 # gradients add up in .grad
    scaler.unscale_(optimizer)                        # back to true gradient size ...
    clip_grad_norm_(model.parameters(), 1.0)          # ... so clipping sees real norms
    scaler.step(optimizer); scaler.update()           # skips the step if fp16 overflowed
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()

Everything else in this file is bookkeeping around those lines: moving
batches to the device, timing, peak memory, a progress bar, a live plot,
and the few extra lines that several processes need
(:class:`~torch.nn.parallel.DistributedDataParallel`, ``no_sync`` while
accumulating, averaging the logged loss).

The knobs, all in :class:`TrainConfig`:

* ``batch_size`` x ``grad_accum`` x processes = samples per optimizer step.
  Accumulation trades time for memory: two micro-batches of 8 give the same
  gradient as one batch of 16 with about half the activation memory.
* ``max_length`` cuts long texts; with ``padding="dynamic"`` a batch is only
  as long as its longest sentence.
* ``activation_checkpointing`` keeps only each layer's input during the
  forward pass and recomputes the rest during backward: less memory, about
  a third more compute.
* ``precision``: see :mod:`course.train.precision`.
* ``fused``: ``AdamW(fused=True)`` updates all parameters in one kernel
  instead of a Python loop over tensors; on a CPU it nearly halves the step
  time of a small model.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from course.errors import CourseError
from course.memory import PeakMemory, fits_in_memory
from course.train.data import check_batch_size, check_max_length, check_padding
from course.train.precision import Precision, autocast_context, choose_precision, grad_scaler

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from course.train.live import LivePlot


@dataclass
class TrainConfig:
    """Every setting of a fine-tuning run, with the quick CPU values as defaults."""

    steps: int = 60  # optimizer steps
    batch_size: int = 16  # samples per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step
    max_length: int = 64  # tokens kept per text (truncation)
    padding: str = "dynamic"  # "dynamic": per batch; "max_length": every text to max_length
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0  # None: no clipping
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    activation_checkpointing: bool = False
    fused: bool | None = None  # None: fused AdamW where the device supports it
    eval_every: int = 0  # 0: evaluate only at the end
    seed: int = 0

    def check(self) -> TrainConfig:
        """Raise a one-line CourseError for settings that cannot work."""
        for name in ("steps", "batch_size", "grad_accum"):
            check_batch_size(getattr(self, name), name)
        check_max_length(self.max_length)
        check_padding(self.padding)
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise CourseError(f"lr must be a number between 0 and 1, got {self.lr!r}")
        if self.warmup_steps < 0 or self.eval_every < 0:
            raise CourseError("warmup_steps and eval_every must be >= 0")
        return self

    @property
    def samples_per_step(self) -> int:
        """Samples per optimizer step in one process (batch_size x grad_accum)."""
        return self.batch_size * self.grad_accum


@dataclass
class TrainResult:
    """What a run did: per-step history, speed, peak memory and the final evaluation."""

    config: dict[str, Any]
    precision: str
    optimizer: str
    world_size: int
    history: list[dict[str, float]] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    samples: int = 0
    peak_memory_mb: float = 0.0
    baseline_memory_mb: float = 0.0
    memory_source: str = ""

    @property
    def samples_per_s(self) -> float:
        """Training throughput over all processes (evaluation time excluded)."""
        return self.samples / self.seconds if self.seconds else 0.0

    @property
    def step_time_s(self) -> float:
        """Median seconds per optimizer step (the first, warm-up step excluded when possible)."""
        times = [row["seconds"] for row in self.history]
        return statistics.median(times[1:] if len(times) > 1 else times) if times else 0.0

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last (up to) 5 steps."""
        losses = [row["loss"] for row in self.history[-5:]]
        return sum(losses) / len(losses) if losses else math.nan


# ----------------------------------------------------------------- building blocks


def enable_activation_checkpointing(model: PreTrainedModel) -> None:
    """Recompute activations in backward instead of storing them (transformers 5 name first)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or getattr(
        model, "gradient_checkpointing_enable", None
    )
    if enable is None or not getattr(model, "supports_gradient_checkpointing", False):
        raise CourseError(f"{type(model).__name__} does not support activation checkpointing")
    if getattr(model.config, "use_cache", False):
        model.config.use_cache = False  # training keeps no key/value cache; a cache cannot be recomputed anyway
    enable()


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel per step when the device supports it.

    ``config.fused=None`` tries fused and falls back quietly; ``True`` insists.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    settings = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.fused is False:
        return torch.optim.AdamW(params, **settings)
    try:
        return torch.optim.AdamW(params, fused=True, **settings)
    except (RuntimeError, ValueError) as error:
        if config.fused:
            raise CourseError(f"fused AdamW is not available here: {error}") from None
        return torch.optim.AdamW(params, **settings)


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    """A short description like 'AdamW (fused)'."""
    fused = optimizer.defaults.get("fused")
    return f"{type(optimizer).__name__}{' (fused)' if fused else ''}"


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """Linear warm-up then linear decay to 0: the Trainer's default schedule."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)


def batches_forever(loader: torch.utils.data.DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    """Yield batches epoch after epoch, reshuffling each epoch (``sampler.set_epoch``)."""
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch to ``device`` (asynchronously from pinned memory)."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter."""
    return next(model.parameters()).device


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def train_step(
    model: torch.nn.Module,
    micro_batches: list[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    autocast: Any,
    max_grad_norm: float | None = 1.0,
) -> torch.Tensor:
    """One optimizer step over ``len(micro_batches)`` accumulated micro-batches.

    Returns the mean loss of the step (a detached tensor).  Under
    DistributedDataParallel, gradients are averaged across processes only on
    the last micro-batch (``no_sync`` skips the all-reduce before it).
    """
    import torch

    total = torch.zeros((), device=model_device(model))
    for index, batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        sync = nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast:
                loss = model(**batch).loss / len(micro_batches)
            scaler.scale(loss).backward()
        total += loss.detach()
    if max_grad_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total


def same_update(
    candidate: Callable[..., Any],
    model: torch.nn.Module,
    micro_batches: list[dict[str, torch.Tensor]],
    autocast: Any = None,
    lr: float = 0.1,
) -> bool:
    """Check a hand-written optimizer step against :func:`train_step`; True, or a CourseError saying what differs.

    ``candidate(model, micro_batches, optimizer, autocast)`` must do one
    optimizer step over the accumulated micro-batches and return the mean
    loss.  Both steps run on copies of ``model`` (dropout off, so both see
    the same numbers) with plain SGD at ``lr`` and no clipping, so any
    difference in the gradient shows up in the weights.  Pass a bfloat16
    ``autocast`` to also catch a forward pass that ignores it.
    """
    import copy

    import torch

    autocast = nullcontext() if autocast is None else autocast
    before = [p.detach().clone() for p in model.parameters()]
    yours = copy.deepcopy(model).eval()
    your_loss = candidate(yours, micro_batches, torch.optim.SGD(yours.parameters(), lr=lr), autocast)
    ours = copy.deepcopy(model).eval()  # copied only now: an unfinished candidate costs one copy
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    our_loss = train_step(ours, micro_batches, torch.optim.SGD(ours.parameters(), lr=lr), scaler, autocast, None)
    scalar = your_loss.numel() == 1 if isinstance(your_loss, torch.Tensor) else isinstance(your_loss, float)
    if not scalar:
        raise CourseError(f"return the step's mean loss (a float or a 0-d tensor), got {type(your_loss).__name__}")
    if abs(float(your_loss) - float(our_loss)) > 1e-5 * max(1.0, abs(float(our_loss))):
        raise CourseError(
            f"your loss {float(your_loss):.5f} vs {float(our_loss):.5f}: return the mean of the micro-batch "
            "losses, each computed under `with autocast:`"
        )
    if any(p.grad is not None and bool(p.grad.any()) for p in yours.parameters()):
        raise CourseError("gradients are left in .grad after the step: call optimizer.zero_grad()")
    names = [name for name, _ in model.named_parameters()]
    for name, old, mine, reference in zip(names, before, yours.parameters(), ours.parameters(), strict=True):
        expected, got = reference.detach() - old, mine.detach() - old
        if not torch.allclose(got, expected, rtol=1e-3, atol=1e-7):
            scale = got.abs().max().item() / max(expected.abs().max().item(), 1e-12)
            raise CourseError(
                f"{name} moved {scale:.2f}x as far as train_step moves it: {_step_hint(scale, len(micro_batches))}"
            )
    return True


def _step_hint(scale: float, micro_batches: int) -> str:
    """What a wrong update most likely forgot, from how far it moved the weights."""
    if scale < 0.01:
        return "call optimizer.step() after the backward passes"
    if micro_batches > 1 and abs(scale - micro_batches) < 0.1 * micro_batches:
        return "divide each micro-batch loss by the number of micro-batches before backward()"
    return "the direction is close but not the numbers: run each forward pass under `with autocast:`"


def evaluate(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device | str | None = None,
    precision: Precision | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy over every sample of ``loader`` (eval mode, no gradients).

    Sums per-sample values and divides once at the end, so a smaller last
    batch counts exactly as much as its samples.  The model's train/eval mode
    is restored afterwards.
    """
    import torch

    model = unwrap(model)
    device = torch.device(device) if device is not None else model_device(model)
    autocast = autocast_context(device, precision) if precision is not None else nullcontext()
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, device)
            with autocast:
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            labels = batch["labels"]
            loss_sum += torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
            correct += (logits.argmax(dim=-1) == labels).sum().item()
            count += labels.numel()
    model.train(was_training)
    if count == 0:
        raise CourseError("the evaluation loader is empty")
    return {"loss": loss_sum / count, "accuracy": correct / count, "samples": count}


# ----------------------------------------------------------------------- the loop


def _distributed() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without torch.distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _mean_across_processes(value: torch.Tensor, world_size: int) -> float:
    """The average of a scalar over all processes (just the value in one process)."""
    if world_size > 1:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        value /= world_size
    return value.item()


def prepare_model(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.nn.Module:
    """Move to the device, switch to train mode, maybe checkpoint, maybe wrap in DDP."""
    model.to(device)
    model.train()
    if config.activation_checkpointing:
        enable_activation_checkpointing(model)
    rank, world_size = _distributed()
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def fit(
    model: PreTrainedModel,
    train_loader: torch.utils.data.DataLoader,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    eval_loader: torch.utils.data.DataLoader | None = None,
    progress: bool = True,
    plot: LivePlot | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` for ``config.steps`` optimizer steps; return the history.

    ``device`` is a torch device or string (see :func:`course.devices.choose_device`).
    With ``eval_loader``, the model is evaluated every ``config.eval_every``
    steps and at the end.  Under ``torchrun`` (torch.distributed initialised)
    the model is wrapped in DistributedDataParallel; only rank 0 shows
    progress and plots.
    """
    import torch
    from tqdm.auto import tqdm

    config.check()
    device = torch.device(device)
    rank, world_size = _distributed()
    torch.manual_seed(config.seed + rank)  # dropout masks: reproducible, different per process
    precision = choose_precision(config.precision, device)
    autocast = autocast_context(device, precision)
    scaler = grad_scaler(device, precision)
    model = prepare_model(model, config, device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    result = TrainResult(asdict(config), str(precision), optimizer_name(optimizer), world_size)
    batches = batches_forever(train_loader)
    is_main = rank == 0
    bar = tqdm(total=config.steps, desc="training", disable=not (progress and is_main), leave=True)

    with PeakMemory(device) as memory:
        for step in range(1, config.steps + 1):
            started = time.perf_counter()
            micro_batches = [to_device(next(batches), device) for _ in range(config.grad_accum)]
            with fits_in_memory(_sizes(micro_batches[0]), device):
                loss = train_step(model, micro_batches, optimizer, scaler, autocast, config.max_grad_norm)
            scheduler.step()
            row = {
                "step": step,
                "loss": _mean_across_processes(loss, world_size),  # .item() waits for the GPU
                "lr": scheduler.get_last_lr()[0],
                "seconds": time.perf_counter() - started,
            }
            result.history.append(row)
            result.seconds += row["seconds"]
            result.samples += config.samples_per_step * world_size
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            bar.update()
            if plot is not None and is_main:
                plot.log(step, loss=row["loss"])
            if on_step is not None:
                on_step(row)
            if eval_loader is not None and is_main and _evaluate_now(step, config):
                scores = evaluate(model, eval_loader, device, precision)
                result.evaluations.append({"step": step, **scores})
                bar.write(f"step {step}: eval loss {scores['loss']:.4f}, accuracy {scores['accuracy']:.3f}")
                if plot is not None:
                    plot.log(step, eval_loss=scores["loss"], eval_accuracy=scores["accuracy"])
    bar.close()
    if plot is not None and is_main:
        plot.close()
    result.peak_memory_mb, result.baseline_memory_mb = memory.peak_mb, memory.baseline_mb
    result.memory_source = memory.source
    return result


def _sizes(batch: dict[str, torch.Tensor]) -> str:
    """'batch size 16 x length 64', read from the batch actually sent to the model."""
    rows, length = batch["input_ids"].shape
    return f"batch size {rows} x length {length}"


def _evaluate_now(step: int, config: TrainConfig) -> bool:
    """Evaluate every ``eval_every`` steps and after the last step."""
    return step == config.steps or (config.eval_every > 0 and step % config.eval_every == 0)
