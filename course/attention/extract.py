"""Run a model once and keep the attention probabilities of every layer and head.

:func:`extract` returns an :class:`AttentionMaps` per text: the tokens and a
``(layers, heads, seq, seq)`` tensor, float32 on the CPU whatever the model's
device and dtype, with the padding removed (it received zero attention anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from course.attention.layers import _as_texts, _forward, _is_causal, eager_attention, encode
from course.errors import CourseError

if TYPE_CHECKING:  # type hints only: importing this module must not import torch
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class AttentionMaps:
    """The attention probabilities of one text, for every layer and head.

    ``attentions[layer, head, i, j]`` is how much token ``i`` (the query)
    attends to token ``j`` (the key); every row sums to 1.  The tensor is
    float32 on the CPU whatever the model's device and dtype.
    """

    text: str
    tokens: list[str]
    attentions: torch.Tensor  # layers x heads x seq x seq
    input_ids: list[int]
    special: list[bool]  # True for [CLS], [SEP], <|endoftext|> ...
    causal: bool  # True for decoders: each token sees only the past
    truncated: bool = False

    @property
    def num_layers(self) -> int:
        """Number of layers."""
        return self.attentions.shape[0]

    @property
    def num_heads(self) -> int:
        """Number of heads per layer."""
        return self.attentions.shape[1]

    def head(self, layer: int, head: int) -> torch.Tensor:
        """The ``seq x seq`` probabilities of one head, with a clear error when out of range."""
        check_index("layer", layer, self.num_layers)
        check_index("head", head, self.num_heads)
        return self.attentions[layer, head]

    def first(self, n: int) -> AttentionMaps:
        """The same maps cut to the first ``n`` tokens (queries and keys), e.g. to draw a long text.

        Rows of the cut maps no longer sum to 1 when the text had more tokens.
        """
        if n >= len(self.tokens):
            return self
        return replace(
            self,
            tokens=self.tokens[:n],
            attentions=self.attentions[:, :, :n, :n].contiguous(),
            input_ids=self.input_ids[:n],
            special=self.special[:n],
        )

    def __repr__(self) -> str:
        flags = (", causal" if self.causal else "") + (", truncated" if self.truncated else "")
        shown = " ".join(self.tokens[:8]) + (" ..." if len(self.tokens) > 8 else "")
        return (
            f"AttentionMaps({len(self.tokens)} tokens, {self.num_layers} layers x {self.num_heads} heads"
            f"{flags}: {shown})"
        )


def check_index(kind: str, value: int, count: int) -> int:
    """Raise a one-line :class:`CourseError` unless ``0 <= value < count``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise CourseError(f"{kind} {value!r} is out of range: there are {count} {kind}s, numbered 0 to {count - 1}")
    return value


def extract(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str | Sequence[str]
) -> AttentionMaps | list[AttentionMaps]:
    """Run ``model`` on ``text`` and return its attention probabilities.

    One string gives one :class:`AttentionMaps` with ``.tokens`` and
    ``.attentions`` shaped ``layers x heads x seq x seq``.  A list of strings
    is run as one padded batch and gives a list of :class:`AttentionMaps`, one
    per text, each trimmed to its own tokens.  Encoder-decoder models report
    their encoder's self-attention.

    The model is switched to eager attention (and eval mode) for the call
    only; its own settings are restored afterwards.
    """
    import torch

    inputs, truncated = encode(model, tokenizer, text)
    with eager_attention(model):
        per_layer = _forward(model, inputs)
        causal = _is_causal(model)
    stacked = torch.stack([layer.detach().float().cpu() for layer in per_layer], dim=1)  # batch x L x H x S x S
    special_ids = set(tokenizer.all_special_ids)
    maps = [
        _one_text(item, stacked[row], inputs, row, tokenizer, special_ids, causal, truncated[row])
        for row, item in enumerate(_as_texts(text))
    ]
    return maps[0] if isinstance(text, str) else maps


def _one_text(
    text: str,
    attentions: torch.Tensor,
    inputs: dict[str, torch.Tensor],
    row: int,
    tokenizer: PreTrainedTokenizerBase,
    special_ids: set[int],
    causal: bool,
    truncated: bool,
) -> AttentionMaps:
    """The maps of batch row ``row``, without its padding (on whichever side the tokenizer put it)."""
    positions = inputs["attention_mask"][row].bool().cpu().nonzero().squeeze(1)
    ids = inputs["input_ids"][row].cpu()[positions].tolist()
    return AttentionMaps(
        text=text,
        tokens=tokenizer.convert_ids_to_tokens(ids),
        attentions=attentions[:, :, positions][:, :, :, positions].contiguous(),
        input_ids=ids,
        special=[token_id in special_ids for token_id in ids],
        causal=causal,
        truncated=truncated,
    )
