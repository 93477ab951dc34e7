"""The KV cache, measured: time per new token with and without it, and what it costs in memory.

Without a cache, generating token ``n`` runs the model over all ``n``
previous tokens again: step ``n`` costs ~``n`` token-passes, so ``N`` new
tokens cost ~``N^2 / 2``.  With the cache, each layer keeps the keys and values
of every token seen so far, and a step feeds *one* token: its query attends
to the stored keys.  Step cost becomes ~constant (plus an attention read that
grows with ``n``), ``N`` tokens cost ~``N``::

    no cache:  step n = model(tokens[0:n])        -> O(n) work per step
    cache:     step n = model(tokens[n-1], cache) -> O(1) work (+ reading n cached K/V)

The price is memory, per sequence::

    2 (K and V) x layers x heads x tokens x head_dim x bytes per number

For this lesson's 4-layer, 256-wide decoder that is 2 x 4 x 256 x 4 bytes =
8 KiB per token in float32; for a 7-billion-parameter model (32 layers, 4096
wide, 16 bits) it is 512 KiB per token: a 4 k context is 2 GiB per sequence,
which is why serving systems manage the cache carefully.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


def cache_bytes_formula(config: Any, tokens: int, batch: int = 1, bytes_per_number: int = 4) -> int:
    """2 (K, V) x layers x batch x heads x tokens x head_dim x bytes: the cache's size, from the config alone."""
    layers = config.num_hidden_layers
    hidden = config.hidden_size  # heads x head_dim
    return 2 * layers * batch * hidden * tokens * bytes_per_number


def cache_bytes(cache: Any) -> int:
    """The bytes actually held by a transformers cache object (every layer's key and value tensors)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if tensor is not None and hasattr(tensor, "numel"):
                total += tensor.numel() * tensor.element_size()
    return total


def _step_times(model: PreTrainedModel, prompt: torch.Tensor, new_tokens: int, use_cache: bool) -> list[float]:
    """Seconds for each of ``new_tokens`` greedy steps (forward + argmax), with or without the cache."""
    import torch

    from course.generate.decoding import next_token_logits

    ids, cache, times = prompt, None, []
    for _ in range(new_tokens):
        started = time.perf_counter()
        logits, cache = next_token_logits(model, ids, cache, use_cache)
        next_id = logits.argmax(dim=-1, keepdim=True)  # (1, 1)
        if next_id.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        ids = torch.cat([ids, next_id], dim=-1)
    return times


def time_generation(
    model: PreTrainedModel, new_tokens: int = 255, prompt: torch.Tensor | None = None, repeats: int = 1
) -> dict[str, Any]:
    """Time ``new_tokens`` greedy steps with and without the KV cache, alternating, in one run.

    Returns the per-step times (the median over ``repeats`` for each step),
    the totals, the speed-up (no-cache total / cache total) and the cache's
    size at the end, measured and by formula.  ``prompt`` defaults to one
    token.  Prompt + new tokens must fit the model's context.
    """
    import torch

    from course.generate.decoding import context_length, next_token_logits

    device = next(model.parameters()).device
    prompt = prompt if prompt is not None else torch.zeros((1, 1), dtype=torch.long)
    prompt = prompt.to(device)
    context = context_length(model)
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 1:
        raise CourseError(f"new_tokens must be a positive integer, got {new_tokens!r}")
    if prompt.shape[1] + new_tokens > context:
        raise CourseError(
            f"prompt ({prompt.shape[1]}) + new_tokens ({new_tokens}) exceed the context of {context}: "
            f"use new_tokens <= {context - prompt.shape[1]}"
        )
    model.eval()
    _step_times(model, prompt, 3, True)  # warm-up: first calls allocate and pick kernels
    runs: dict[bool, list[list[float]]] = {True: [], False: []}
    for _ in range(repeats):
        for use_cache in (False, True):  # alternate, so a change in machine load hits both
            runs[use_cache].append(_step_times(model, prompt, new_tokens, use_cache))
    per_step = {key: [statistics.median(step) for step in zip(*values, strict=True)] for key, values in runs.items()}
    _, cache = next_token_logits(model, torch.cat([prompt, prompt.new_zeros((1, new_tokens))], dim=-1))
    total_cache, total_full = sum(per_step[True]), sum(per_step[False])
    return {
        "new_tokens": new_tokens,
        "per_step_cache_s": per_step[True],
        "per_step_no_cache_s": per_step[False],
        "total_cache_s": total_cache,
        "total_no_cache_s": total_full,
        "speedup": total_full / total_cache,
        "cache_bytes": cache_bytes(cache),
        "cache_bytes_formula": cache_bytes_formula(model.config, prompt.shape[1] + new_tokens),
    }


def plot_timing(timing: dict[str, Any], title: str = "") -> Any:
    """Per-step time with and without the cache (left), the cache's size as it grows (right)."""
    import matplotlib.pyplot as plt

    steps = range(1, timing["new_tokens"] + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    left.plot(steps, [t * 1e3 for t in timing["per_step_no_cache_s"]], label="no cache: whole sequence again")
    left.plot(steps, [t * 1e3 for t in timing["per_step_cache_s"]], label="KV cache: one new token")
    left.set(xlabel="new token", ylabel="ms per token", title=title or f"speed-up {timing['speedup']:.1f}x")
    left.legend()
    per_token = timing["cache_bytes"] / (timing["new_tokens"] + 1)
    right.plot(steps, [per_token * (n + 1) / 2**10 for n in steps])
    right.set(xlabel="tokens in the cache", ylabel="KiB", title=f"cache size: {per_token / 2**10:.1f} KiB per token")
    fig.tight_layout()
    return fig
