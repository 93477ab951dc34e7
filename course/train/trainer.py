"""The same fine-tune through 🤗 ``Trainer``, with transformers 5 argument names.

:func:`training_arguments` maps a :class:`~course.train.loop.TrainConfig`
onto ``TrainingArguments`` one field at a time, so the two recipes can be
compared line by line.  Names that changed in transformers 5 (the old ones
raise ``TypeError`` now):

==============================  ==============================
transformers 4                  transformers 5
==============================  ==============================
``evaluation_strategy``         ``eval_strategy``
``no_cuda=True``                ``use_cpu=True``
``Trainer(tokenizer=...)``      ``Trainer(processing_class=...)``
``gradient_checkpointing``      ``activation_checkpointing``
``report_to`` default "all"     default ``"none"``
==============================  ==============================

Two settings matter beyond the names:

* ``average_tokens_across_devices=False``: with the default ``True`` and
  several processes, the logged loss of a model that ignores
  ``num_items_in_batch`` (BERT does) is multiplied by the number of processes.
* ``bf16=True`` needs a bf16 GPU, or ``use_cpu=True``; ``fp16=True`` on a
  CPU silently does nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course.train.loop import TrainConfig, optimizer_name
from course.train.precision import choose_precision

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments

    from course.train.data import TokenizedDataset


@dataclass
class TrainerRun:
    """What :func:`trainer_finetune` measured, shaped like :class:`~course.train.loop.TrainResult`."""

    trainer: Trainer
    seconds: float
    samples: int
    optimizer: str
    history: list[dict[str, float]] = field(default_factory=list)
    evaluation: dict[str, float] = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        """Samples per second over the whole ``trainer.train()`` call."""
        return self.samples / self.seconds if self.seconds else 0.0


def training_arguments(
    config: TrainConfig, output_dir: str | Path, device: torch.device | str = "cpu", progress: bool = False
) -> TrainingArguments:
    """``TrainingArguments`` equivalent to ``config`` (transformers 5 names)."""
    import torch
    from transformers import TrainingArguments

    config.check()
    device = torch.device(device)
    precision = choose_precision(config.precision, device)
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=64,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type="linear",
        max_grad_norm=config.max_grad_norm if config.max_grad_norm is not None else 0.0,
        optim="adamw_torch" if config.fused is False else "adamw_torch_fused",
        bf16=precision.name == "bf16",
        fp16=precision.name == "fp16",
        use_cpu=device.type == "cpu",
        activation_checkpointing=config.activation_checkpointing,
        eval_strategy="steps" if config.eval_every else "no",
        eval_steps=config.eval_every or None,
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        average_tokens_across_devices=False,
        ddp_find_unused_parameters=False,  # every parameter gets a gradient: skip DDP's extra graph walk
        seed=config.seed,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
    )


def accuracy(eval_prediction: Any) -> dict[str, float]:
    """``compute_metrics`` for the Trainer: the fraction of argmax predictions that match."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    return {"accuracy": float((logits.argmax(axis=-1) == labels).mean())}


def trainer_finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: TokenizedDataset,
    config: TrainConfig,
    *,
    output_dir: str | Path,
    eval_dataset: TokenizedDataset | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> TrainerRun:
    """Fine-tune with ``Trainer``; time ``trainer.train()`` and evaluate if asked."""
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer

    if config.activation_checkpointing and getattr(model.config, "use_cache", False):
        model.config.use_cache = False  # as our loop does: no "use_cache=True is incompatible" warning in training
    trainer = Trainer(
        model=model,
        args=training_arguments(config, output_dir, device, progress),
        train_dataset=train,
        eval_dataset=eval_dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=accuracy,
    )
    if not progress:  # without a progress bar Trainer prints every log line: keep the notebook short
        trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    world = trainer.args.world_size
    run = TrainerRun(
        trainer,
        seconds,
        config.steps * config.samples_per_step * world,
        optimizer_name(getattr(trainer.optimizer, "optimizer", trainer.optimizer)),  # unwrap accelerate's
        history=[row for row in trainer.state.log_history if "loss" in row],
    )
    if eval_dataset is not None:
        scores = trainer.evaluate()
        run.evaluation = {"loss": scores["eval_loss"], "accuracy": scores["eval_accuracy"]}
    return run


def compare_recipes(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: TokenizedDataset,
    config: TrainConfig,
    *,
    output_dir: str | Path,
    device: torch.device | str = "cpu",
    repeats: int = 2,
) -> list[dict[str, Any]]:
    """Our loop and ``Trainer`` on the same data for the same ``config.steps``, alternated, ``repeats`` times.

    Every run starts from a fresh copy of ``model`` and is timed from the
    call to its end (setting up the optimizer and loader included, for
    both), so the ratio compares like with like.  The order alternates as
    loop, Trainer, Trainer, loop, ... so that a machine whose load drifts
    during the runs favours neither recipe.
    One row per run: recipe, repeat, seconds, samples/s, mean loss of the last steps.
    """
    import copy

    from course.train.data import make_loader
    from course.train.loop import fit
    from course.validate import check_batch_size

    check_batch_size(repeats, "repeats")
    config = replace(config.check(), eval_every=0)
    samples = config.steps * config.samples_per_step

    def run_loop(repeat: int) -> None:
        trial = copy.deepcopy(model)
        loader = make_loader(train, tokenizer, config.batch_size, seed=config.seed)
        started = time.perf_counter()
        result = fit(trial, loader, config, device=device, progress=False)
        rows.append(_recipe_row("loop", repeat, time.perf_counter() - started, samples, result.final_loss))

    def run_trainer(repeat: int) -> None:
        run = trainer_finetune(copy.deepcopy(model), tokenizer, train, config, output_dir=output_dir, device=device)
        losses = [row["loss"] for row in run.history[-5:]]
        rows.append(_recipe_row("Trainer", repeat, run.seconds, samples, sum(losses) / max(1, len(losses))))

    rows: list[dict[str, Any]] = []
    for repeat in range(1, repeats + 1):
        # loop, Trainer, Trainer, loop, ...: a machine that speeds up or slows down favours neither
        order = (run_loop, run_trainer) if repeat % 2 else (run_trainer, run_loop)
        for runner in order:
            runner(repeat)
    return rows


def _recipe_row(recipe: str, repeat: int, seconds: float, samples: int, final_loss: float) -> dict[str, Any]:
    """One timed run of :func:`compare_recipes`."""
    return {
        "recipe": recipe,
        "repeat": repeat,
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "final_loss": final_loss,
    }


def recipe_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per recipe: median, slowest and fastest samples/s over the repeats of :func:`compare_recipes`."""
    import statistics

    summary = {}
    for recipe in dict.fromkeys(row["recipe"] for row in rows):
        speeds = [row["samples_per_s"] for row in rows if row["recipe"] == recipe]
        summary[recipe] = {"median": statistics.median(speeds), "min": min(speeds), "max": max(speeds)}
    return summary
