"""The formula every head computes, in five small functions::

    probabilities = softmax(Q @ K^T / sqrt(d) + mask)      # (batch, heads, seq, seq)
    output        = probabilities @ V                      # (batch, heads, seq, head_dim)

Read them next to the lesson notebook: :func:`split_heads` and
:func:`merge_heads` turn one big projection into many heads and back,
:func:`padding_mask` and :func:`causal_mask` say which keys a query may see,
:func:`attention_probabilities` is the softmax itself.  Each one builds its
tensors on the device of its input, so the same code runs on CPU, CUDA and MPS.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:  # type hints only: importing this module must not import torch
    import torch


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
    batch, seq = attention_mask.shape
    return attention_mask.bool().view(batch, 1, 1, seq)  # (batch, 1, 1, seq)


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
