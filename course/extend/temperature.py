"""A custom attention module for BERT: a learnable temperature per head.

Every head turns scores into probabilities with a softmax::

    probabilities = softmax(Q K^T / sqrt(d) / t_h)        t_h > 0, one per head

``t_h = 1`` is BERT's own attention.  A temperature below 1 sharpens the
head (it focuses on fewer tokens), above 1 it spreads the head's attention
out.  We learn ``log t_h`` (so ``t_h`` stays positive) starting at 0, that
is ``t_h = 1``: the wrapped model computes exactly what the pretrained one
did, and training moves each head only as far as the task asks.  After
training, :func:`temperatures` shows what was learned: a layers x heads map.

How it plugs in.  ``BertAttention`` calls its ``self`` module (a
``BertSelfAttention``) as ``self.self(hidden_states, attention_mask, ...)``
and reads back ``(output, weights)``.  :class:`TemperatureSelfAttention`
keeps the original module (its ``query``/``key``/``value`` projections and
dropout) and replaces only the arithmetic, written with lesson 01's
building blocks (``course.attention``)::

    q, k, v = split_heads(query(x)), split_heads(key(x)), split_heads(value(x))  # (batch, heads, seq, d)
    p = attention_probabilities(q / t, k, scale, mask)                         # (batch, heads, seq, seq)
    out = merge_heads(dropout(p) @ v)                                           # (batch, seq, heads * d)

The model may hand over its attention mask in either of transformers'
formats (additive floats for ``eager``, booleans or ``None`` for ``sdpa``):
:func:`allowed` turns both into booleans.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from course.attention import attention_probabilities, merge_heads, split_heads
from course.errors import CourseError
from course.extend.surgery import find_modules, freeze, replace_module

#: BERT-family self-attention modules, by their name inside the model.
SELF_ATTENTION = r"re:.*layer\.\d+\.attention\.self"


def allowed(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The model's attention mask as booleans (True = may attend), or None for "everything"."""
    if attention_mask is None or attention_mask.dtype == torch.bool:
        return attention_mask
    return attention_mask > torch.finfo(attention_mask.dtype).min / 2  # additive mask: 0 allowed, -big blocked


class TemperatureSelfAttention(nn.Module):
    """BERT self-attention with a learnable temperature per head, initialised to 1 (identity)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        for needed in ("query", "key", "value", "num_attention_heads", "scaling"):
            if not hasattr(inner, needed):
                raise CourseError(
                    f"{type(inner).__name__} is not a BERT-style self-attention (it has no '{needed}'); "
                    "wrap the modules named like 'encoder.layer.N.attention.self'"
                )
        self.inner = inner
        self.heads = inner.num_attention_heads
        self.log_temperature = nn.Parameter(torch.zeros(self.heads, device=inner.query.weight.device))

    @property
    def temperature(self) -> torch.Tensor:
        """``t_h = exp(log t_h)``, one per head (all 1 before training)."""
        return self.log_temperature.exp()

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same inputs and outputs as ``BertSelfAttention`` (no key/value cache: encoders only)."""
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            raise CourseError("TemperatureSelfAttention is for encoders: it does not support a key/value cache")
        q = split_heads(self.inner.query(hidden_states), self.heads)  # (batch, heads, seq, head_dim)
        k = split_heads(self.inner.key(hidden_states), self.heads)  # (batch, heads, seq, head_dim)
        v = split_heads(self.inner.value(hidden_states), self.heads)  # (batch, heads, seq, head_dim)
        q = q / self.temperature.view(1, -1, 1, 1).to(q.dtype)  # (1, heads, 1, 1) broadcast over batch and seq
        probabilities = attention_probabilities(q, k, scale=self.inner.scaling, mask=allowed(attention_mask))
        dropped = self.inner.dropout(probabilities)  # (batch, heads, seq, seq)
        return merge_heads(dropped @ v), probabilities  # (batch, seq, heads * head_dim)


def add_temperature(model: nn.Module, train: str | Iterable[str] = ("classifier",)) -> list[str]:
    """Wrap every self-attention of a BERT-family model; freeze all but temperatures and ``train``."""
    layers = find_modules(model, SELF_ATTENTION)
    for name, layer in layers.items():
        if not isinstance(layer, TemperatureSelfAttention):
            replace_module(model, name, TemperatureSelfAttention(layer))
    train = [train] if isinstance(train, str) else list(train)
    freeze(model, except_=["log_temperature", *train])
    return sorted(layers)


def temperatures(model: nn.Module) -> torch.Tensor:
    """Learned temperatures, ``layers x heads`` (float32 on the CPU)."""
    rows = [m.temperature.detach().float().cpu() for m in model.modules() if isinstance(m, TemperatureSelfAttention)]
    if not rows:
        raise CourseError("the model has no TemperatureSelfAttention layers: call add_temperature(model) first")
    return torch.stack(rows)  # (layers, heads)


def plot_temperatures(table: torch.Tensor, title: str = "learned temperature per head") -> Any:
    """Heat map of a ``layers x heads`` temperature table, centred on 1 (unchanged)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    spread = max(float((table - 1).abs().max()), 1e-3)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * table.shape[1], 0.8 + 0.4 * table.shape[0]))
    image = ax.imshow(table.numpy(), cmap="coolwarm", norm=TwoSlopeNorm(1.0, 1 - spread, 1 + spread))
    ax.set(xlabel="head", ylabel="layer", title=title, xticks=range(table.shape[1]), yticks=range(table.shape[0]))
    fig.colorbar(image, ax=ax, label="t < 1 sharper, t > 1 flatter")
    fig.tight_layout()
    return fig
