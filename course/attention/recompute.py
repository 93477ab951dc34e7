"""Recompute a layer's attention by hand from its own weights, and compare with the model.

:func:`capture` records, with forward pre-hooks, exactly what each attention
layer received and returned; :func:`recompute_from` rebuilds the
probabilities from that input with the layer's own projections, the padding
mask and (for decoders) the causal mask written out.  They match the model
to float32 rounding (in practice exactly): nothing else is hidden in the
softmax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from course.attention.extract import check_index
from course.attention.formula import attention_probabilities, causal_mask, padding_mask, split_heads
from course.attention.layers import (
    _attention_modules,
    _forward,
    _is_causal,
    _text_config,
    eager_attention,
    encode,
    project_qkv,
)
from course.errors import CourseError

if TYPE_CHECKING:  # type hints only: importing this module must not import torch
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Config hints that positions enter attention in a way recompute() does not model.
UNSUPPORTED_POSITIONS = ("rope_theta", "rope_parameters", "rotary_dim", "relative_attention_num_buckets")


def _num_heads(module: Any, model: PreTrainedModel) -> int:
    """Heads of an attention module, whatever the family calls the attribute."""
    for name in ("num_attention_heads", "num_heads", "n_heads", "n_head"):
        value = getattr(module, name, None)
        if isinstance(value, int):
            return value
    return _text_config(model).num_attention_heads


@dataclass
class LayerCapture:
    """What one attention layer saw and produced during a forward pass.

    ``inputs``: its input hidden states (``batch x seq x hidden``);
    ``attention_mask``: the tokenizer's mask (``batch x seq``, 1 = real token);
    ``weights``: the model's own probabilities (``batch x heads x seq x seq``);
    ``output``: the first thing the module returned (for BERT, the merged
    heads' weighted values before the output projection).
    """

    module: Any
    inputs: torch.Tensor
    attention_mask: torch.Tensor
    weights: torch.Tensor
    output: torch.Tensor
    causal: bool


def capture(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str | Sequence[str]
) -> list[LayerCapture]:
    """Run the model once (eager) and record every attention layer's input and output, in call order.

    Forward *pre*-hooks catch each layer's input hidden states exactly as the
    layer received them, so nothing (embeddings, layer norms) is redone by
    hand.  Layers that share weights (ALBERT) are recorded once per call.
    """
    _check_recomputable(model)
    inputs, _ = encode(model, tokenizer, text)
    modules = _attention_modules(model)
    if not modules:
        raise CourseError(f"{type(model).__name__} has no attention layer that recompute() understands")
    records: list[dict[str, Any]] = []

    def before(module: Any, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        records.append({"module": module, "inputs": hidden.detach()})

    def after(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        records[-1]["output"], records[-1]["weights"] = output[0].detach(), output[1].detach()

    handles = [m.register_forward_pre_hook(before, with_kwargs=True) for m in modules]
    handles += [m.register_forward_hook(after, with_kwargs=True) for m in modules]
    try:
        with eager_attention(model):
            _forward(model, inputs)
            causal = _is_causal(model)
    finally:
        for handle in handles:
            handle.remove()
    mask = inputs["attention_mask"]
    return [LayerCapture(attention_mask=mask, causal=causal, **record) for record in records]


def _check_recomputable(model: PreTrainedModel) -> None:
    """Refuse models whose attention adds position terms recompute() does not write out."""
    config = _text_config(model)
    found = [key for key in UNSUPPORTED_POSITIONS if getattr(config, key, None) is not None]
    kind = getattr(config, "position_embedding_type", "absolute")
    if found or kind not in (None, "absolute"):
        reason = found[0] if found else f"position_embedding_type={kind}"
        raise CourseError(
            f"recompute() covers attention with absolute positions; {type(model).__name__} adds "
            f"position terms inside attention ({reason}): use extract() to see its weights"
        )


def recompute_from(layer: LayerCapture, num_heads: int) -> torch.Tensor:
    """The probabilities of a captured layer, by hand: ``batch x heads x seq x seq``.

    Q, K, V come from the layer's own projections of its own input; the
    scale is the layer's (1/sqrt(d) for every family here); keys that are
    padding are masked, and for decoders so is the future.
    """
    q, k, _ = (split_heads(x, num_heads) for x in project_qkv(layer.module, layer.inputs))
    scale = getattr(layer.module, "scaling", 1.0 / math.sqrt(q.shape[-1]))
    mask = padding_mask(layer.attention_mask)
    if layer.causal:
        mask = mask & causal_mask(q.shape[-2], device=q.device)
    return attention_probabilities(q, k, scale, mask)


def recompute(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str | Sequence[str], layer: int
) -> torch.Tensor:
    """Layer ``layer``'s attention probabilities, computed by hand from its own weights.

    Returns ``heads x seq x seq`` for one text (``batch x heads x seq x seq``
    for a list, padded like the model's input), float32 on the CPU.  Compare
    with ``extract(...).attentions[layer]``: the tests demand 1e-5; in
    practice they agree exactly, as the same operations run in the same order.
    """
    import torch

    layers = capture(model, tokenizer, text)
    check_index("layer", layer, len(layers))
    chosen = layers[layer]
    with torch.no_grad():
        probs = recompute_from(chosen, _num_heads(chosen.module, model)).float().cpu()
    return probs[0] if isinstance(text, str) else probs


def compare(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str | Sequence[str]) -> list[float]:
    """Max absolute difference, per layer, between :func:`recompute` and the model's own weights.

    One forward pass serves all layers.  Rows of padding queries are
    included: they too must match.
    """
    import torch

    errors = []
    with torch.no_grad():
        for layer in capture(model, tokenizer, text):
            mine = recompute_from(layer, _num_heads(layer.module, model))
            errors.append((mine.float() - layer.weights.float()).abs().max().item())
    return errors
