"""Score every head on patterns you can name: entropy, special tokens, previous/next token ...

Averaged over a few varied sentences, the scores find heads that do one
recognisable thing (a previous-token head, a head parked on ``[SEP]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from course.attention.extract import AttentionMaps
from course.errors import CourseError

if TYPE_CHECKING:  # type hints only: importing this module must not import torch
    import torch


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

    a = maps.attentions  # (layers, heads, seq, seq)
    seq, device = a.shape[-1], a.device  # every helper tensor is built where the maps live
    ids = torch.tensor(maps.input_ids, device=device)
    special = torch.tensor(maps.special, dtype=a.dtype, device=device)
    same = ids.unsqueeze(1) == ids.unsqueeze(0)  # (seq, seq): token i and token j are the same word
    same = same & ~torch.eye(seq, dtype=torch.bool, device=device)  # ... but not the token itself
    zero = torch.zeros(a.shape[:2], device=device)
    return {
        "entropy": -(a * a.clamp_min(1e-12).log()).sum(-1).mean(-1),
        "special": (a @ special).mean(-1),
        # the diagonal just below the main one holds (i, i-1): each token's weight on the one before it
        "previous": a.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1) if seq > 1 else zero,
        "next": a.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1) if seq > 1 else zero,
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
