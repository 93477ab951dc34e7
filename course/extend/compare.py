"""Full fine-tune, head only, adapter, LoRA and peft's LoRA: the same loop, side by side.

Each method starts from the *same* model (a deep copy of one loaded model
with one fresh classifier head), changes it with its ``prepare`` function,
and is trained with lesson 03's :func:`course.train.fit` on the *same*
tokenised batches.  For each one we keep what a student would weigh:

* trainable parameters (count and share of the model);
* peak memory during training and how much of it the training added
  ("extra": gradients, optimizer state, activations);
* median time per optimizer step;
* accuracy on the test split.

Parameter-efficient methods learn faster per step with a larger learning
rate (their few parameters start at zero or at random), so each method
carries its own ``steps`` and ``lr``; the weaker ones may get fewer steps to
keep the lesson quick, and the table says how many each had.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from course.errors import CourseError
from course.extend.surgery import count_parameters, freeze

if TYPE_CHECKING:
    import torch


#: What "the head" means for every method below: BERT's pooler (a dense layer on the [CLS] vector) and
#: the classifier.  Both sit on top of the encoder; the pooler of a sentence-embedding model such as
#: MiniLM was never trained for classification, so it is retrained along with the fresh classifier.
HEAD = ("classifier", "pooler.dense")


@dataclass
class Method:
    """One way to fine-tune: how to change the model, and how long / how fast to train it."""

    name: str
    prepare: Callable[[Any], Any]  # model -> model ready to train (may return a new wrapper, as peft does)
    steps: int
    lr: float


def head_only(model: Any, head: Sequence[str] = HEAD) -> Any:
    """Freeze the whole encoder; train only the head."""
    freeze(model, except_=list(head))
    return model


def full_finetune(model: Any) -> Any:
    """Every parameter trains (lesson 03)."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def hand_lora(
    r: int, alpha: float, targets: Sequence[str] = ("query", "value"), dropout: float = 0.0, head: Sequence[str] = HEAD
) -> Callable:
    """A ``prepare`` function that applies the course's :func:`~course.extend.lora.apply_lora`."""

    def prepare(model: Any) -> Any:
        from course.extend.lora import apply_lora

        apply_lora(model, targets, r=r, alpha=alpha, dropout=dropout, train=head)
        return model

    return prepare


def peft_lora(
    r: int, alpha: float, targets: Sequence[str] = ("query", "value"), dropout: float = 0.0, head: Sequence[str] = HEAD
) -> Callable:
    """A ``prepare`` function that wraps the model with 🤗 peft's LoRA."""

    def prepare(model: Any) -> Any:
        return peft_model(model, r=r, alpha=alpha, targets=targets, dropout=dropout, head=head)

    return prepare


def peft_model(
    model: Any,
    r: int,
    alpha: float,
    targets: Sequence[str] = ("query", "value"),
    dropout: float = 0.0,
    head: Sequence[str] = ("classifier",),
) -> Any:
    """``get_peft_model`` with a LoRA config equivalent to ``apply_lora(model, targets, r, alpha, dropout, head)``.

    ``head`` becomes peft's ``modules_to_save``: modules trained in full next
    to LoRA (task ``SEQ_CLS`` always adds the classifier).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    from course.extend.lora import check_rank_and_alpha
    from course.extend.surgery import find_modules

    check_rank_and_alpha(r, alpha)
    find_modules(model, targets)  # the same one-line error as ours for an unknown name
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        modules_to_save=list(head),
        task_type=TaskType.SEQ_CLS,
    )
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question; nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def adapters(bottleneck: int = 16, head: Sequence[str] = HEAD) -> Callable:
    """A ``prepare`` function that adds bottleneck adapters after every feed-forward block."""

    def prepare(model: Any) -> Any:
        from course.extend.adapter import add_adapters

        add_adapters(model, bottleneck, train=head)
        return model

    return prepare


def temperature(model: Any, head: Sequence[str] = HEAD) -> Any:
    """Learnable per-head attention temperatures (plus the head)."""
    from course.extend.temperature import add_temperature

    add_temperature(model, train=list(head))
    return model


def standard_methods(
    steps: int = 90,
    weak_steps: int = 30,
    lora_lr: float = 3e-3,
    ranks: Iterable[int] = (4, 8),
    targets: Sequence[str] = ("query", "value"),
    full_lr: float = 1e-4,
    bottleneck: int = 16,
    head: Sequence[str] = HEAD,
) -> list[Method]:
    """The lesson's line-up: full, head only, adapter, hand LoRA per rank (alpha = 2r), peft's LoRA.

    The last rank is the main LoRA run and gets ``steps``; every other method
    gets ``weak_steps``.  peft's LoRA uses the last rank and the same targets.
    """
    ranks = list(ranks)
    if not ranks:
        raise CourseError("give at least one LoRA rank, e.g. ranks=(4, 8)")
    methods = [
        Method("full fine-tune", full_finetune, weak_steps, full_lr),
        Method("head only", lambda model: head_only(model, head), weak_steps, lora_lr),
        Method(f"adapter ({bottleneck})", adapters(bottleneck, head), weak_steps, lora_lr),
    ]
    for r in ranks:
        r_steps = steps if r == ranks[-1] else weak_steps
        methods.append(Method(f"LoRA r={r}", hand_lora(r, 2 * r, targets, head=head), r_steps, lora_lr))
    last = ranks[-1]
    methods.append(Method(f"peft LoRA r={last}", peft_lora(last, 2 * last, targets, head=head), weak_steps, lora_lr))
    return methods


def train_method(
    base: Any,
    method: Method,
    loaders: dict[str, Any],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    max_length: int = 64,
    precision: str = "auto",
    seed: int = 0,
) -> tuple[dict[str, Any], Any]:
    """Copy ``base``, prepare it with ``method``, train and test it: ``(row, trained model)``."""
    from course.memory import release_free_memory
    from course.train import TrainConfig, evaluate, fit

    release_free_memory(device)
    model = method.prepare(copy.deepcopy(base))
    counts = count_parameters(model)
    if counts.trainable == 0:
        raise CourseError(f"method '{method.name}' left no parameter trainable")
    config = TrainConfig(
        steps=method.steps,
        batch_size=batch_size,
        max_length=max_length,
        lr=method.lr,
        warmup_steps=max(1, method.steps // 10),
        precision=precision,
        seed=seed,
    )
    started = time.perf_counter()
    result = fit(model, loaders["train"], config, device=device, progress=False)
    seconds = time.perf_counter() - started
    scores = evaluate(model, loaders["test"], device)
    row = {
        "method": method.name,
        "trainable": counts.trainable,
        "fraction": counts.fraction,
        "steps": method.steps,
        "lr": method.lr,
        "step_time_s": result.step_time_s,
        "train_seconds": seconds,
        "peak_mb": result.peak_memory_mb,
        "extra_mb": result.peak_memory_mb - result.baseline_memory_mb,
        "memory_source": result.memory_source,
        "precision": result.precision,
        "test_accuracy": scores["accuracy"],
    }
    return row, model


def compare(
    base: Any,
    methods: Sequence[Method],
    loaders: dict[str, Any],
    *,
    keep: Iterable[str] = (),
    progress: bool = True,
    **settings: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train every method from the same ``base``; return the table rows and the kept models by name.

    ``settings`` go to :func:`train_method` (device, batch_size, max_length,
    precision, seed).  Only the models named in ``keep`` are returned; the
    others are dropped as soon as they are measured, to keep memory flat.
    """
    names = [method.name for method in methods]
    if len(set(names)) != len(names):
        raise CourseError(f"method names must be unique, got {names}")
    unknown = set(keep) - set(names)
    if unknown:
        raise CourseError(f"cannot keep {sorted(unknown)}: the methods are {', '.join(names)}")
    rows, kept = [], {}
    for method in methods:
        row, model = train_method(base, method, loaders, **settings)
        rows.append(row)
        if progress:
            print(
                f"{row['method']:>16}: {row['steps']:3d} steps, {row['step_time_s']:.3f} s/step, "
                f"test accuracy {row['test_accuracy']:.3f}",
                flush=True,
            )
        if method.name in keep:
            kept[method.name] = model
        del model
    return rows, kept


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a Markdown table."""
    lines = [
        "| method | trainable | share | steps | s/step | peak MiB | extra MiB | test accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['trainable']:,} | {100 * row['fraction']:.2f}% | {row['steps']} | "
            f"{row['step_time_s']:.3f} | {row['peak_mb']:.0f} | {row['extra_mb']:.0f} | {row['test_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def plot_comparison(rows: Sequence[dict[str, Any]], title: str = "") -> Any:
    """Three panels: accuracy against trainable share (log scale), step time, extra memory."""
    import matplotlib.pyplot as plt

    names = [row["method"] for row in rows]
    colors = [f"C{i}" for i in range(len(rows))]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 3.8))
    for row, color in zip(rows, colors, strict=True):
        left.scatter(100 * row["fraction"], row["test_accuracy"], color=color, s=60, label=row["method"])
    left.set(xscale="log", xlabel="trainable parameters (% of the model)", ylabel="test accuracy")
    left.legend(fontsize=8, loc="lower right")
    middle.barh(names, [row["step_time_s"] for row in rows], color=colors)
    middle.set(xlabel="seconds per optimizer step")
    right.barh(names, [row["extra_mb"] for row in rows], color=colors)
    right.set(xlabel=f"extra memory while training (MiB, {rows[0]['memory_source'] if rows else ''})")
    for ax in (middle, right):
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def load_base(model_name: str | None = None, seed: int = 0, **kwargs: Any) -> Any:
    """A sequence classifier with a fresh 2-label head, loaded without the expected noise.

    Loading a model that has no classifier prints transformers' LOAD REPORT
    ("classifier.weight MISSING: newly initialized") and a progress bar: both
    expected here, since the head is new.  They are silenced for this call
    only; real errors (a model not in the cache, offline) still raise, as one
    line from :func:`course.assets.load_model`.
    """
    import torch
    from transformers.utils import logging as hf_logging

    from course.assets import load_model

    torch.manual_seed(seed)  # the fresh head's initial weights
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return load_model(model_name, task="sequence-classification", **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
