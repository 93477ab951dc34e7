"""Peak memory and step time for a few training settings: notebook 03's table.

Every setting trains a fresh copy of the same model for a few steps with
:func:`course.train.loop.fit`, padding every text to ``max_length`` so that
the length, not the sentences drawn, decides the work.  What to expect:

* memory grows with ``batch_size x max_length`` (the activations kept for
  backward);
* a fixed part does not: :func:`fixed_memory` computes it from the parameter
  count.  In float32 each parameter has its weight (4 bytes, loaded before
  training), its gradient (4 bytes) and AdamW's two moments (8 bytes), so
  training adds ``parameters x (4 + 8)`` bytes on top of the loaded model
  whatever the batch: about 270 MB for MiniLM's 22.7 M parameters;
* accumulation (``batch 4 x 2``) does the work of ``batch 8`` with the
  activation memory of ``batch 4``;
* activation checkpointing cuts activation memory further and costs about
  one extra forward pass per step.

On a CPU "memory" is the process's RSS (see :mod:`course.memory`), so
the ``extra`` column (peak minus what was in use before) is the one to read.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from course.errors import CourseError
from course.memory import release_free_memory
from course.train.data import make_loader, tokenize
from course.train.loop import TrainConfig, fit

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: A cheap set for a CPU (seconds per setting with 3 steps), under 2 GiB of RSS in all:
#: batch 8 -> 16, length 64 -> 128, then accumulation and checkpointing against "b8 L128".
CPU_SETTINGS = [
    {"batch_size": 8, "max_length": 64},
    {"batch_size": 16, "max_length": 64},
    {"batch_size": 8, "max_length": 128},
    {"batch_size": 4, "max_length": 128, "grad_accum": 2},
    {"batch_size": 8, "max_length": 128, "activation_checkpointing": True},
]

#: Keys a setting may have; anything else is a typo.
SETTING_KEYS = {"batch_size", "max_length", "grad_accum", "activation_checkpointing", "precision"}


def label(setting: Mapping[str, Any]) -> str:
    """A short name like 'b8x2 L128 ckpt' for a setting."""
    text = f"b{setting['batch_size']}"
    if setting.get("grad_accum", 1) > 1:
        text += f"x{setting['grad_accum']}"
    text += f" L{setting['max_length']}"
    if setting.get("activation_checkpointing"):
        text += " ckpt"
    if setting.get("precision", "fp32") not in ("fp32", "auto"):
        text += f" {setting['precision']}"
    return text


def _check_setting(setting: Mapping[str, Any]) -> None:
    """Unknown keys or missing sizes raise a one-line CourseError."""
    unknown = set(setting) - SETTING_KEYS
    if unknown:
        raise CourseError(f"unknown setting key(s) {sorted(unknown)}: use {sorted(SETTING_KEYS)}")
    if "batch_size" not in setting or "max_length" not in setting:
        raise CourseError(f"each setting needs batch_size and max_length, got {dict(setting)}")


def profile_settings(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Any,
    settings: Iterable[Mapping[str, Any]] = CPU_SETTINGS,
    *,
    steps: int = 3,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """Train a copy of ``model`` for ``steps`` steps per setting; one result row per setting.

    ``rows`` is a labelled split (``data["train"]``).  ``model`` itself is
    not changed.  Rows hold: setting, samples per step, median step time,
    samples/s, peak and extra memory in MiB, and where memory was read.
    """
    results = []
    for setting in settings:
        _check_setting(setting)
        config = TrainConfig(
            steps=steps,
            batch_size=setting["batch_size"],
            grad_accum=setting.get("grad_accum", 1),
            max_length=setting["max_length"],
            padding="max_length",
            activation_checkpointing=setting.get("activation_checkpointing", False),
            precision=setting.get("precision", precision),
        ).check()
        tokenized = tokenize(rows, tokenizer, config.max_length, padding="max_length")
        loader = make_loader(tokenized, tokenizer, config.batch_size, seed=config.seed)
        release_free_memory(device)
        trial = copy.deepcopy(model)
        result = fit(trial, loader, config, device=device, progress=False)
        results.append(
            {
                "setting": label(setting),
                "samples_per_step": config.samples_per_step,
                "step_time_s": result.step_time_s,
                "samples_per_s": config.samples_per_step / result.step_time_s,
                "peak_mb": result.peak_memory_mb,
                "extra_mb": max(0.0, result.peak_memory_mb - result.baseline_memory_mb),
                "memory": result.memory_source,
            }
        )
        del trial, result
        release_free_memory(device)
    return results


def fixed_memory(model: torch.nn.Module) -> dict[str, float]:
    """The memory training needs whatever the batch: weights, gradients, AdamW state, in MiB.

    Per trainable parameter, in float32: weight 4 bytes, gradient 4 bytes,
    AdamW's first and second moments 4 + 4 bytes.  Mixed precision (autocast)
    does not change these: the weights, gradients and optimizer state stay in
    float32; only activations are computed in 16 bits.  ``training_extra`` is
    what training adds on top of the loaded model (gradients + AdamW).
    """
    from course.memory import MB

    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    weights, gradients, adamw = params * 4 / MB, params * 4 / MB, params * 8 / MB
    return {
        "parameters": params,
        "weights_mb": weights,
        "gradients_mb": gradients,
        "adamw_mb": adamw,
        "training_extra_mb": gradients + adamw,
        "total_mb": weights + gradients + adamw,
    }


def format_table(rows: list[dict[str, Any]], fixed_mb: float | None = None) -> str:
    """The rows as an aligned text table (also valid Markdown).

    With ``fixed_mb`` (gradients + AdamW state, :func:`fixed_memory`) two more
    columns split the measured extra memory: the fixed part, and what is left
    for the part that grows with batch and length (mostly activations).
    """
    header = "| setting | samples/step | step time (s) | samples/s | peak (MiB) | extra (MiB) |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if fixed_mb is not None:
        header += " fixed (MiB) | grows (MiB) |"
        rule += "---:|---:|"
    lines = [header, rule]
    for row in rows:
        line = (
            f"| {row['setting']} | {row['samples_per_step']} | {row['step_time_s']:.3f} | "
            f"{row['samples_per_s']:.1f} | {row['peak_mb']:.0f} | {row['extra_mb']:.0f} |"
        )
        if fixed_mb is not None:
            line += f" {fixed_mb:.0f} | {max(0.0, row['extra_mb'] - fixed_mb):.0f} |"
        lines.append(line)
    return "\n".join(lines)


def plot_profile(rows: list[dict[str, Any]], title: str = "Training cost per setting") -> Figure:
    """Two bar charts side by side: extra memory and step time per setting."""
    import matplotlib.pyplot as plt

    names = [row["setting"] for row in rows]
    fig, (mem_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    mem_ax.bar(names, [row["extra_mb"] for row in rows], color="tab:purple")
    mem_ax.set_ylabel(f"extra memory (MiB, {rows[0]['memory'] if rows else ''})")
    time_ax.bar(names, [row["step_time_s"] for row in rows], color="tab:orange")
    time_ax.set_ylabel("seconds per optimizer step")
    for ax in (mem_ax, time_ax):
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
