"""See what attention does inside a real model, and check it by hand.

Every head of every layer computes the same small formula::

    probabilities = softmax(Q @ K^T / sqrt(d) + mask)      # seq x seq per head
    output        = probabilities @ V

The package gives three things, one module each (plus the formula and the
family-specific plumbing):

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

from course.attention.extract import AttentionMaps, check_index, extract
from course.attention.formula import (
    attention_probabilities,
    causal_mask,
    merge_heads,
    padding_mask,
    split_heads,
)
from course.attention.layers import QKV_NAMES, TruncationWarning, eager_attention, encode, max_tokens, project_qkv
from course.attention.recompute import (
    UNSUPPORTED_POSITIONS,
    LayerCapture,
    capture,
    compare,
    recompute,
    recompute_from,
)
from course.attention.summary import HeadSummary, summarize_heads

__all__ = [
    "QKV_NAMES",
    "UNSUPPORTED_POSITIONS",
    "AttentionMaps",
    "HeadSummary",
    "LayerCapture",
    "TruncationWarning",
    "attention_probabilities",
    "capture",
    "causal_mask",
    "check_index",
    "compare",
    "eager_attention",
    "encode",
    "extract",
    "max_tokens",
    "merge_heads",
    "padding_mask",
    "project_qkv",
    "recompute",
    "recompute_from",
    "split_heads",
    "summarize_heads",
]
