"""Lesson 04: change a pretrained model without retraining all of it.

One idea per file:

* :mod:`course.extend.surgery`     find submodules by name, replace them, freeze, count parameters
* :mod:`course.extend.temperature` a custom BERT self-attention with a learnable temperature per head
* :mod:`course.extend.adapter`     a zero-initialised bottleneck adapter after each feed-forward block
* :mod:`course.extend.lora`        ``LoRALinear`` by hand: forward, merge / unmerge, save and load
* :mod:`course.extend.parity`      our LoRA against 🤗 peft's, number for number
* :mod:`course.extend.compare`     full fine-tune vs head only vs adapter vs LoRA vs peft, one table

Typical use (notebook 04)::

    from course.extend import apply_lora, count_parameters, merge_lora
    names = apply_lora(model, ["query", "value"], r=8, alpha=16)
    print(count_parameters(model))          # 74,498 of 22,787,714 parameters train (0.33%)

``import course.extend`` does not import torch: the surgery helpers need
none, and the ``nn.Module`` classes (``LoRALinear`` ...) are loaded from
their files the first time you ask for them.
"""

from __future__ import annotations

import importlib
from typing import Any

from course.extend.surgery import (
    ParameterCount,
    count_parameters,
    find_modules,
    freeze,
    get_module,
    replace_module,
    unfreeze,
)

#: Names this package re-exports from the files that import torch, loaded on first use.
_LAZY = {
    "LoRALinear": "lora",
    "apply_lora": "lora",
    "merge_lora": "lora",
    "unmerge_lora": "lora",
    "unwrap_lora": "lora",
    "save_adapter": "lora",
    "load_adapter": "lora",
    "BottleneckAdapter": "adapter",
    "add_adapters": "adapter",
    "TemperatureSelfAttention": "temperature",
    "add_temperature": "temperature",
    "temperatures": "temperature",
    "copy_into_peft": "parity",
    "max_abs_diff": "parity",
}


def __getattr__(name: str) -> Any:
    """Load ``LoRALinear`` and friends from their file on first access (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"course.extend.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'course.extend' has no attribute '{name}'")


__all__ = [
    "ParameterCount",
    "count_parameters",
    "find_modules",
    "freeze",
    "get_module",
    "replace_module",
    "unfreeze",
    *_LAZY,
]
