"""A bottleneck adapter (Houlsby et al., 2019) after each feed-forward block.

Inside every BERT layer the feed-forward block ends in ``output.dense``
(``intermediate -> hidden``), followed by dropout, the residual connection
and a LayerNorm.  An adapter is a tiny two-layer network inserted right
after that projection, with its own residual::

    h = dense(x)                                  # the frozen feed-forward output (batch, seq, hidden)
    h = h + up(gelu(down(h)))                     # adapter: hidden -> bottleneck -> hidden
    ... dropout, + residual, LayerNorm            # unchanged BERT

``down`` squeezes 384 features into ``bottleneck`` (say 16) and ``up``
brings them back: ``2 * 384 * 16`` weights per layer.  ``up`` starts at
**zero**, so at the start the adapter adds exactly nothing and the model is
the pretrained one; training then grows only what the task needs.

Unlike LoRA, an adapter cannot be merged into the weights (the GELU between
``down`` and ``up`` is not linear): it costs a little time at inference.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from course.errors import CourseError
from course.extend.surgery import find_modules, freeze, replace_module

#: Where the feed-forward block of a BERT-family layer ends (``BertOutput.dense``).
FFN_OUTPUT = r"re:.*layer\.\d+\.output\.dense"


class BottleneckAdapter(nn.Module):
    """``y = base(x); y + up(gelu(down(y)))`` with ``up`` initialised to zero."""

    def __init__(self, base: nn.Linear, bottleneck: int = 16) -> None:
        super().__init__()
        if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck <= 0:
            raise CourseError(f"adapter bottleneck must be a positive integer (try 16), got {bottleneck!r}")
        self.base = base
        self.base.requires_grad_(False)
        hidden = base.out_features
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.adapter_down = nn.Linear(hidden, bottleneck, **factory)
        self.adapter_up = nn.Linear(bottleneck, hidden, **factory)
        nn.init.zeros_(self.adapter_up.weight)  # the adapter starts as "add zero"
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen projection, then the adapter's residual correction."""
        hidden = self.base(x)  # (batch, seq, hidden)
        squeezed = nn.functional.gelu(self.adapter_down(hidden))  # (batch, seq, bottleneck)
        return hidden + self.adapter_up(squeezed)  # (batch, seq, hidden)


def add_adapters(
    model: nn.Module,
    bottleneck: int = 16,
    targets: str | Iterable[str] = FFN_OUTPUT,
    train: str | Iterable[str] = ("classifier",),
) -> list[str]:
    """Put a :class:`BottleneckAdapter` after every feed-forward block; freeze the rest.

    Returns the names of the wrapped layers.  Parameters whose names contain
    one of ``train`` stay trainable besides the adapters (the fresh head).
    """
    layers = find_modules(model, targets, kind=nn.Linear)
    for name, layer in layers.items():
        replace_module(model, name, BottleneckAdapter(layer, bottleneck))
    train = [train] if isinstance(train, str) else list(train)
    freeze(model, except_=["adapter_", *train])
    return sorted(layers)
