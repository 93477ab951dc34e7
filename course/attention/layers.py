"""Find the attention layers of any Hugging Face model, and run it the way attention can be read.

Families name things differently: BERT has ``query``/``key``/``value``,
DistilBERT ``q_lin``/..., BART and OPT ``q_proj``/..., and GPT-2 one
``Conv1D`` called ``c_attn`` that computes all three at once.  This module
hides those differences (:func:`project_qkv`) and the transformers 5 detail
that only ``eager`` attention returns its weights (:func:`eager_attention`),
so :mod:`course.attention.extract` and :mod:`course.attention.recompute` can
stay about attention.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:  # type hints only: importing this module must not import torch
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class TruncationWarning(UserWarning):
    """A text was longer than the model can read and was cut."""


#: Attribute names of the separate query/key/value projections, by family.
QKV_NAMES = (
    ("query", "key", "value"),  # BERT, RoBERTa, ELECTRA, ALBERT, CamemBERT ...
    ("q_lin", "k_lin", "v_lin"),  # DistilBERT
    ("q_proj", "k_proj", "v_proj"),  # BART, OPT, ...
)


@contextmanager
def eager_attention(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """Temporarily use ``eager`` attention (the only kind that returns weights) in eval mode.

    ``sdpa`` and flash attention fuse the softmax into one kernel and never
    materialise the probabilities.  The model's own implementation and its
    train/eval mode are restored on exit, even after an error.
    """
    if not hasattr(model, "set_attn_implementation") or not hasattr(model, "config"):
        raise CourseError(f"expected a Hugging Face model (PreTrainedModel), got {type(model).__name__}")
    before = model.config._attn_implementation
    was_training = model.training
    if before != "eager":
        try:
            model.set_attn_implementation("eager")
        except (ValueError, ImportError) as error:
            raise CourseError(
                f"{type(model).__name__} cannot switch to eager attention, so it cannot show attention weights "
                f"({str(error).splitlines()[0][:120]})"
            ) from None
    model.eval()
    try:
        yield model
    finally:
        if before != "eager":
            model.set_attn_implementation(before)
        model.train(was_training)


def max_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """The longest input (in tokens, special tokens included) that both model and tokenizer accept."""
    limits = [getattr(tokenizer, "model_max_length", None)]
    config = _text_config(model)
    limits += [getattr(config, key, None) for key in ("max_position_embeddings", "n_positions")]
    usable = [int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    return min(usable) if usable else 1_000_000


def _text_config(model: PreTrainedModel) -> Any:
    """The config that describes the text layers (composite models keep it in a sub-config)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _as_texts(text: str | Sequence[str]) -> list[str]:
    """A list of non-empty strings, or a one-line error saying what is wrong."""
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise CourseError("no text given: pass a sentence, or a list of sentences")
    for item in texts:
        if not isinstance(item, str):
            raise CourseError(f"texts must be strings, got {type(item).__name__}")
        if not item.strip():
            raise CourseError("the text is empty: give a sentence with at least one word")
    return texts


def encode(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str | Sequence[str]
) -> tuple[dict[str, torch.Tensor], list[bool]]:
    """Tokenize one text or a batch for ``model``: padded tensors on its device, plus which texts were cut.

    Texts longer than the model can read are truncated with a
    :class:`TruncationWarning` that says by how much.  Only the inputs the
    model's ``forward`` accepts are kept (DistilBERT takes no token_type_ids).
    A tokenizer without a pad token (GPT-2) gets its end-of-text token as one.
    """
    _check_model_and_tokenizer(model, tokenizer)
    texts = _as_texts(text)
    limit = max_tokens(model, tokenizer)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
    truncated = [length > limit for length in lengths]
    for item, length, cut in zip(texts, lengths, truncated, strict=True):
        if cut:
            preview = item[:40] + ("..." if len(item) > 40 else "")
            warnings.warn(
                f"text '{preview}' has {length} tokens but the model reads at most {limit}: keeping the first {limit}",
                TruncationWarning,
                stacklevel=3,
            )
    if len(texts) > 1 and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no pad token; any token works, it is masked
    batch = tokenizer(texts, truncation=True, max_length=limit, padding=True, return_tensors="pt")
    accepted = inspect.signature(_runner(model).forward).parameters
    device = _device_of(model)
    inputs = {key: value.to(device) for key, value in batch.items() if key in accepted}
    if "attention_mask" not in inputs:
        raise CourseError(f"{type(model).__name__}.forward takes no attention_mask: not a text model")
    return inputs, truncated


def _check_model_and_tokenizer(model: Any, tokenizer: Any) -> None:
    """One-line errors for the usual mix-ups: a non-Hugging Face model, a missing tokenizer."""
    if not hasattr(model, "config") or not hasattr(model, "set_attn_implementation"):
        raise CourseError(f"expected a Hugging Face model (PreTrainedModel), got {type(model).__name__}")
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise CourseError(f"expected a Hugging Face tokenizer, got {type(tokenizer).__name__}")


def _device_of(model: PreTrainedModel) -> Any:
    """The device of the model's first parameter (where inputs must go)."""
    return next(model.parameters()).device


def _runner(model: PreTrainedModel) -> PreTrainedModel:
    """The part of the model that reads the text: the encoder of an encoder-decoder model, else the model."""
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return model


def _forward(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """One forward pass that returns the per-layer attention tuple, or a clear error."""
    import torch

    with torch.no_grad():
        try:
            outputs = _runner(model)(**inputs, output_attentions=True)
        except TypeError as error:
            if "output_attentions" not in str(error):
                raise
            outputs = None
    attentions = getattr(outputs, "attentions", None)
    if not attentions:
        raise CourseError(
            f"{type(model).__name__} returned no attention weights: it has no softmax attention "
            "(e.g. a state-space or convolutional model) or does not expose it"
        )
    return attentions


def _is_causal(model: PreTrainedModel) -> bool:
    """True for decoder-only models, whose tokens see only the past."""
    config = _text_config(model)
    if getattr(config, "is_encoder_decoder", False):
        return False
    if getattr(config, "is_decoder", False):
        return True
    return any(getattr(module, "is_causal", False) for module in _attention_modules(model))


def _is_self_attention(module: Any) -> bool:
    """True for a module that owns q/k/v projections of a self-attention (not cross-attention)."""
    if getattr(module, "is_cross_attention", False) or "Cross" in type(module).__name__:
        return False
    if hasattr(module, "c_attn"):  # GPT-2: one Conv1D computes q, k and v together
        return True
    return any(all(hasattr(module, name) for name in names) for names in QKV_NAMES)


def _attention_modules(model: PreTrainedModel) -> list[Any]:
    """The self-attention modules of the part of the model that reads the text, in model order."""
    return [module for module in _runner(model).modules() if _is_self_attention(module)]


def project_qkv(module: Any, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply a layer's own query/key/value projections: three ``batch x seq x (heads*d)`` tensors."""
    if hasattr(module, "c_attn"):
        width = module.c_attn.weight.shape[-1] // 3  # Conv1D stores weight as in x out
        return tuple(module.c_attn(hidden).split(width, dim=-1))
    for names in QKV_NAMES:
        if all(hasattr(module, name) for name in names):
            return tuple(getattr(module, name)(hidden) for name in names)
    raise CourseError(f"recompute() does not know the projections of {type(module).__name__}")
