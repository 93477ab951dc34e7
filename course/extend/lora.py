"""LoRA written by hand: a frozen ``nn.Linear`` plus a trainable low-rank update.

A pretrained layer computes ``y = x W^T + b`` with a big ``W`` (``out x in``,
384 x 384 = 147,456 numbers in MiniLM).  Fine-tuning changes ``W`` by some
``ΔW``.  LoRA (Hu et al., 2021) bets that ``ΔW`` has low rank and learns it
as a product of two thin matrices::

    y = x W^T + b  +  (alpha / r) * x A^T B^T          A: r x in,  B: out x r
        \\________/     \\___________________/
         frozen             trainable: r * (in + out) numbers (6,144 for r = 8)

* ``B`` starts at **zero**, so at the start ``ΔW = B A = 0`` and the model is
  exactly the pretrained one; ``A`` starts random (Kaiming-uniform, as in
  ``peft``) so that gradients reach ``B`` from the first step.
* ``alpha / r`` (``scaling``) keeps the size of the update comparable when you
  change ``r``: tune ``alpha`` once, then try ranks.
* **Merging**: ``W + (alpha / r) B A`` is again a plain ``out x in`` matrix.
  Folded into the base weight, inference costs nothing extra; ``unmerge``
  subtracts it again to continue training.

This file imports torch at the top because it defines ``nn.Module`` classes;
``import course.extend`` stays light (the package loads it on first use).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from course.errors import CourseError
from course.extend.surgery import find_modules, freeze, replace_module


def check_rank_and_alpha(r: int, alpha: float) -> None:
    """``r`` must be a positive int and ``alpha`` a positive number: one clear line otherwise."""
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise CourseError(f"LoRA rank r must be a positive integer (try 4 or 8), got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise CourseError(f"LoRA alpha must be a positive number (often 2 * r), got {alpha!r}")


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * B(A(dropout(x)))`` around a frozen ``nn.Linear``.

    >>> layer = LoRALinear(nn.Linear(384, 384), r=8, alpha=16)
    >>> layer.lora_A.shape, layer.lora_B.shape          # (r, in), (out, r)
    (torch.Size([8, 384]), torch.Size([384, 8]))
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise CourseError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        check_rank_and_alpha(r, alpha)
        if not 0 <= dropout < 1:
            raise CourseError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        self.base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))  # (out, r): zero, so ΔW = 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # what nn.Linear and peft use
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The learned update ``(alpha / r) * B @ A``, shaped like the base weight (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base layer plus the low-rank path (only the base once merged)."""
        result = self.base(x)
        if self.merged:
            return result
        update = self.dropout(x) @ self.lora_A.T  # (..., r): squeeze down to r features
        return result + (update @ self.lora_B.T) * self.scaling  # (..., out): and back up

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``ΔW`` into the base weight: one matmul per layer at inference, as before LoRA."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take ``ΔW`` out of the base weight again (to continue training)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"


def apply_lora(
    model: nn.Module,
    targets: str | Iterable[str] = ("query", "value"),
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    train: str | Iterable[str] = ("classifier",),
) -> list[str]:
    """Wrap every ``nn.Linear`` whose name matches ``targets`` in a :class:`LoRALinear`.

    Everything else is frozen except parameters whose name contains one of
    ``train`` (the fresh classifier head must learn too: ``peft`` calls these
    ``modules_to_save``).  Returns the names of the wrapped layers.  An
    unknown target name raises one line listing the names that exist.
    """
    check_rank_and_alpha(r, alpha)
    layers = find_modules(model, targets, kind=(nn.Linear, LoRALinear))
    layers = {  # a layer already wrapped is left alone; so is the Linear inside it
        name: layer
        for name, layer in layers.items()
        if not isinstance(layer, LoRALinear) and not name.endswith(".base")
    }
    for name, layer in layers.items():
        replace_module(model, name, LoRALinear(layer, r=r, alpha=alpha, dropout=dropout))
    train = [train] if isinstance(train, str) else list(train)
    freeze(model, except_=["lora_", *train])
    return sorted(layers)


def lora_layers(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, LoRALinear]:
    """The model's LoRA layers by name (all, or only those in ``names``)."""
    found = {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}
    if names is None:
        return found
    wanted = list(names)
    missing = [name for name in wanted if name not in found]
    if missing:
        raise CourseError(f"no LoRA layer named {missing[0]!r}; the model has {len(found)}: {', '.join(found)[:200]}")
    return {name: found[name] for name in wanted}


def merge_lora(model: nn.Module, names: Iterable[str] | None = None) -> list[str]:
    """Merge the LoRA layers named in ``names`` (default: all); returns the merged names."""
    layers = lora_layers(model, names)
    for layer in layers.values():
        layer.merge()
    return list(layers)


def unmerge_lora(model: nn.Module, names: Iterable[str] | None = None) -> list[str]:
    """Undo :func:`merge_lora` for the named layers (default: all)."""
    layers = lora_layers(model, names)
    for layer in layers.values():
        layer.unmerge()
    return list(layers)


def unwrap_lora(model: nn.Module) -> list[str]:
    """Merge every LoRA layer and put the plain ``nn.Linear`` back: a normal 🤗 model again."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        layer.merge()
        replace_module(model, name, layer.base)
    return list(layers)


# ----------------------------------------------------------------- saving only what was trained


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the trainable tensors (LoRA's A and B, the head): what an adapter file holds."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the trainable tensors to a ``.safetensors`` file (kilobytes, not the model's megabytes)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = trainable_state_dict(model)
    if not tensors:
        raise CourseError("the model has no trainable parameters to save: apply_lora() first")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def load_adapter(model: nn.Module, path: str | Path) -> list[str]:
    """Load a file written by :func:`save_adapter` into a model prepared the same way.

    Every tensor must exist in the model with the same shape; otherwise one
    line says which and why (for example an adapter trained with ``r=8``
    loaded into layers built with ``r=4``, or for another model size).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CourseError(f"no adapter file at {path}: save one with save_adapter(model, path)")
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    for name, tensor in tensors.items():
        if name not in params:
            hint = "apply_lora() with the same targets first" if "lora_" in name else "a model of the same kind"
            raise CourseError(f"adapter tensor {name!r} has no place in this model: {hint}")
        if params[name].shape != tensor.shape:
            raise CourseError(
                f"adapter tensor {name} has shape {tuple(tensor.shape)} but the model's is "
                f"{tuple(params[name].shape)}: it was trained with another rank or model size"
            )
    merged = [name for name, layer in lora_layers(model).items() if layer.merged]
    if merged:
        raise CourseError(f"unmerge the LoRA layers before loading an adapter (merged: {merged[0]} ...)")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    return sorted(tensors)
