"""See what attention does inside a real model, and check it by hand.

Every head of every layer computes the same small formula::

    probabilities = softmax(Q @ K^T / sqrt(d) + mask)      # seq x seq per head
    output        = probabilities @ V

This module gives three things:

* :func:`extract` runs a Hugging Face model once and returns the attention
  probabilities of every layer and head (``layers x heads x seq x seq``) with
  the tokens they belong to.  Transformers 5 uses ``sdpa`` attention by
  default, which returns *no* weights; :func:`extract` switches the model to
  ``eager`` attention for the call and puts the original back afterwards.
* :func:`recompute` rebuilds one layer's probabilities from that layer's own
  query/key/value projections and its input hidden states, with the padding
  mask and (for decoders) the causal mask written out by hand.  It matches
  the model to float32 rounding (in practice exactly): proof that nothing
  else is hidden in there.
* :func:`summarize_heads` scores every head on simple patterns (entropy,
  attention to special tokens, previous/next token, itself, repeated tokens)
  so you can find heads that do something you can name.

The building blocks (:func:`split_heads`, :func:`merge_heads`,
:func:`padding_mask`, :func:`causal_mask`, :func:`attention_probabilities`)
are small on purpose: read them next to the lesson notebook.

A batch of texts is welcome everywhere: :func:`extract` then returns one
:class:`AttentionMaps` per text, each trimmed to that text's own tokens (the
padding is removed; it received zero attention anyway).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:  # type hints only: `import course.attention` must not import torch
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class TruncationWarning(UserWarning):
    """A text was longer than the model can read and was cut."""


# ----------------------------------------------------------------- the formula


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``batch x seq x (heads*d)`` -> ``batch x heads x seq x d``.

    A layer computes Q, K and V for all heads with one big matrix; head ``h``
    owns the ``h``-th slice of ``d`` features.  Viewing the last axis as
    ``heads x d`` and moving heads forward gives every head its own
    ``seq x d`` matrix, so one batched matmul serves all heads at once.
    """
    batch, seq, features = x.shape
    if features % num_heads:
        raise CourseError(f"cannot split {features} features into {num_heads} equal heads")
    return x.view(batch, seq, num_heads, features // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``batch x heads x seq x d`` -> ``batch x seq x (heads*d)``: the inverse of :func:`split_heads`."""
    batch, heads, seq, d = x.shape
    return x.transpose(1, 2).reshape(batch, seq, heads * d)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Tokenizer mask ``batch x seq`` (1 = real token) -> boolean ``batch x 1 x 1 x seq``.

    True means "may be attended to".  The mask is on the *keys* (last axis):
    no query may look at padding.  The two singleton axes broadcast it over
    heads and over query positions.
    """
    return attention_mask.bool()[:, None, None, :]


def causal_mask(seq_len: int, device: Any = None) -> torch.Tensor:
    """Boolean ``seq x seq``, True on and below the diagonal.

    Row ``i`` is query position ``i``; it may see keys ``0..i`` and nothing
    after it.  This is what makes a decoder (GPT-2) unable to peek at the
    tokens it is asked to predict.
    """
    import torch

    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()


def attention_probabilities(
    q: torch.Tensor, k: torch.Tensor, scale: float | None = None, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(Q K^T * scale + mask) for ``... x seq x d`` queries and keys.

    ``scale`` defaults to 1/sqrt(d): without it, dot products of long vectors
    grow with d and the softmax saturates to one-hot.  ``mask`` is boolean and
    broadcastable to the scores (True = allowed).  Masked scores are set to
    the most negative float rather than -inf, as transformers does, so a row
    with nothing allowed becomes uniform instead of NaN.
    """
    import torch

    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1)


# ------------------------------------------------------------ extract weights


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


# -------------------------------------------------------- recompute by hand

#: Attribute names of the separate query/key/value projections, by family.
QKV_NAMES = (
    ("query", "key", "value"),  # BERT, RoBERTa, ELECTRA, ALBERT, CamemBERT ...
    ("q_lin", "k_lin", "v_lin"),  # DistilBERT
    ("q_proj", "k_proj", "v_proj"),  # BART, OPT, ...
)
#: Config hints that positions enter attention in a way recompute() does not model.
UNSUPPORTED_POSITIONS = ("rope_theta", "rope_parameters", "rotary_dim", "relative_attention_num_buckets")


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


# -------------------------------------------------------------- head summaries


@dataclass(frozen=True)
class HeadSummary:
    """Per-head scores, each a ``layers x heads`` tensor averaged over query positions (and texts).

    ``entropy``: nats; low = the head focuses on few tokens, high = it spreads.
    ``special``: probability mass on special tokens ([CLS], [SEP]); BERT
    heads with nothing to do often park their attention on [SEP].
    ``previous`` / ``next``: mass on the token just before / after.
    ``itself``: mass on the token itself (the diagonal).
    ``same_token``: mass on *other* occurrences of the same token ("the" -> "the").
    """

    entropy: torch.Tensor
    special: torch.Tensor
    previous: torch.Tensor
    next: torch.Tensor
    itself: torch.Tensor
    same_token: torch.Tensor

    PATTERNS = ("entropy", "special", "previous", "next", "itself", "same_token")

    def top(self, pattern: str, k: int = 3, largest: bool = True) -> list[tuple[int, int, float]]:
        """The ``k`` heads scoring highest on ``pattern`` (lowest with ``largest=False``): (layer, head, score)."""
        if pattern not in self.PATTERNS:
            raise CourseError(f"unknown pattern '{pattern}': choose one of {', '.join(self.PATTERNS)}")
        scores = getattr(self, pattern)
        heads = scores.shape[1]
        order = scores.flatten().argsort(descending=largest)[:k]
        return [(int(i) // heads, int(i) % heads, float(scores.flatten()[i])) for i in order]


def _pattern_scores(maps: AttentionMaps) -> dict[str, torch.Tensor]:
    """The six pattern scores of one text, each ``layers x heads``."""
    import torch

    a = maps.attentions  # L x H x S x S
    seq = a.shape[-1]
    ids = torch.tensor(maps.input_ids)
    special = torch.tensor(maps.special, dtype=a.dtype)
    same = (ids[:, None] == ids[None, :]) & ~torch.eye(seq, dtype=torch.bool)
    rows = torch.arange(seq)
    zero = torch.zeros(a.shape[:2])
    return {
        "entropy": -(a * a.clamp_min(1e-12).log()).sum(-1).mean(-1),
        "special": (a @ special).mean(-1),
        "previous": a[..., rows[1:], rows[:-1]].mean(-1) if seq > 1 else zero,
        "next": a[..., rows[:-1], rows[1:]].mean(-1) if seq > 1 else zero,
        "itself": a.diagonal(dim1=-2, dim2=-1).mean(-1),
        "same_token": (a * same).sum(-1).mean(-1),
    }


def summarize_heads(maps: AttentionMaps | Sequence[AttentionMaps]) -> HeadSummary:
    """Score every head of one text, or average the scores over several texts.

    Several varied sentences give steadier scores than one.
    """
    import torch

    texts = [maps] if isinstance(maps, AttentionMaps) else list(maps)
    if not texts:
        raise CourseError("summarize_heads() needs at least one AttentionMaps")
    per_text = [_pattern_scores(item) for item in texts]
    mean = {name: torch.stack([scores[name] for scores in per_text]).mean(0) for name in HeadSummary.PATTERNS}
    return HeadSummary(**mean)
