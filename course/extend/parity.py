"""Our LoRA against 🤗 peft's: the same numbers, checked.

peft wraps the model and renames things::

    ours:  bert.encoder.layer.0.attention.self.query.lora_A          (r, in)
    peft:  base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight
    ours:  classifier.weight                                          (the trained head)
    peft:  base_model.model.classifier.modules_to_save.default.weight

:func:`copy_into_peft` copies every trained tensor of our model into the
matching peft tensor; if both implement the same formula the two models
then agree to float32 rounding (:func:`max_abs_diff`).
"""

from __future__ import annotations

from typing import Any

import torch

from course.errors import CourseError

PEFT_PREFIX = "base_model.model."


def peft_name(name: str, adapter: str = "default") -> str:
    """The peft parameter name for one of our trainable parameter names."""
    module, _, leaf = name.rpartition(".")
    if leaf in ("lora_A", "lora_B"):
        return f"{PEFT_PREFIX}{module}.{leaf}.{adapter}.weight"
    return f"{PEFT_PREFIX}{module}.modules_to_save.{adapter}.{leaf}"  # a head peft keeps trainable


@torch.no_grad()
def copy_into_peft(ours: torch.nn.Module, peft_model: torch.nn.Module, adapter: str = "default") -> int:
    """Copy our LoRA matrices and trained head into a peft model built with the same config.

    Returns how many tensors were copied.  A tensor without a counterpart,
    or with another shape, raises one line (different targets or rank).
    """
    theirs = dict(peft_model.named_parameters())
    copied = 0
    for name, parameter in ours.named_parameters():
        if not parameter.requires_grad:
            continue
        target = peft_name(name, adapter)
        if target not in theirs:
            raise CourseError(f"peft model has no {target!r} for our {name!r}: build it with the same targets")
        if theirs[target].shape != parameter.shape:
            raise CourseError(
                f"{name}: our shape {tuple(parameter.shape)} vs peft's {tuple(theirs[target].shape)} (another rank?)"
            )
        theirs[target].copy_(parameter)
        copied += 1
    return copied


@torch.no_grad()
def max_abs_diff(first: torch.nn.Module, second: torch.nn.Module, batch: dict[str, Any]) -> float:
    """Largest absolute difference between two models' logits on one batch (both in eval mode)."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    outputs = []
    for model in (first, second):
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        outputs.append(model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu())
        model.train(was_training)
    return (outputs[0] - outputs[1]).abs().max().item()
