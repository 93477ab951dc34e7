"""Decoding by hand: how ``model.generate()`` turns next-token scores into text.

A decoder gives, for every position, a score (logit) for every token of the
vocabulary.  Generating is a loop::

    ids = prompt
    repeat max_new_tokens times:
        logits = model(ids).logits[:, -1]          # scores for the NEXT token, (1, vocab)
        logits = processors(ids, logits)           # repetition penalty, temperature, top-k, top-p
        next   = argmax(logits)                    # greedy ...
             or  multinomial(softmax(logits))      # ... or sampling
        ids    = ids + [next]; stop at end-of-text

The processors, in the order ``generate()`` applies them:

* **repetition penalty** ``r``: every token already in ``ids`` gets its logit
  divided by ``r`` (multiplied when negative): less likely to repeat;
* **temperature** ``t``: ``logits / t``; ``t < 1`` sharpens the distribution
  (towards greedy), ``t > 1`` flattens it (towards random);
* **top-k**: keep the ``k`` highest logits, set the rest to ``-inf``;
* **top-p** (nucleus): keep the smallest set of most likely tokens whose
  probabilities add up to at least ``p``, drop the rest.

**Beam search** keeps the ``num_beams`` best *partial sequences* by summed
log-probability instead of committing to one token at a time.

**The KV cache**: the keys and values of the tokens already seen never change
(a causal model never looks ahead), so each step feeds only the *new* token
and reuses the stored keys and values: ``model(next, past_key_values=cache)``.
Each function here takes ``use_cache`` so the two can be compared.

Every function below is checked against ``generate()`` by the tests: same
tokens for greedy, for beam search and for sampling with the same seed.
They handle one prompt (batch 1), for readability.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from course.errors import CourseError

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase


class ContextWarning(UserWarning):
    """The prompt did not fit the model's context and was cut (only its last tokens were kept)."""


# ------------------------------------------------------------------ checks


def check_sampling(
    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0
) -> None:
    """One clear line for a sampling setting that cannot work."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise CourseError(
            f"temperature must be > 0 when sampling, got {temperature!r}: "
            "use do_sample=False (greedy) for 'temperature 0'"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise CourseError(f"top_k must be an integer >= 1 (or None for no top-k), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise CourseError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p!r}")
    if (
        isinstance(repetition_penalty, bool)
        or not isinstance(repetition_penalty, (int, float))
        or not (repetition_penalty > 0)
    ):
        raise CourseError(f"repetition_penalty must be > 0 (1.0 = no penalty), got {repetition_penalty!r}")


def context_length(model: PreTrainedModel) -> int:
    """The longest sequence the model's position table allows (GPT-2: ``n_positions``)."""
    config = model.config
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise CourseError(f"{type(model).__name__} does not say its context length (n_positions)")


def fit_context(
    input_ids: torch.Tensor, model: PreTrainedModel, max_new_tokens: int, truncate: bool = False
) -> torch.Tensor:
    """Check that prompt + ``max_new_tokens`` fit the context; with ``truncate`` keep only the prompt's last tokens.

    Without ``truncate`` a prompt that does not fit is a one-line CourseError;
    with it, the prompt's start is dropped and a :class:`ContextWarning` says
    how many tokens were cut.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise CourseError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise CourseError(f"expected one prompt of shape (1, seq), got {tuple(input_ids.shape)}")
    if input_ids.shape[1] == 0:
        raise CourseError("the prompt is empty: give at least one token (e.g. the end-of-text token)")
    context = context_length(model)
    if max_new_tokens >= context:
        raise CourseError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in a context of {context}")
    room = context - max_new_tokens
    prompt_len = input_ids.shape[1]
    if prompt_len <= room:
        return input_ids
    if not truncate:
        raise CourseError(
            f"prompt of {prompt_len} tokens + {max_new_tokens} new tokens exceeds the model's context of {context}: "
            f"shorten the prompt to {room} tokens, lower max_new_tokens, or pass truncate=True"
        )
    warnings.warn(
        f"prompt cut from {prompt_len} to its last {room} tokens to leave room for {max_new_tokens} new tokens "
        f"in the context of {context}",
        ContextWarning,
        stacklevel=2,
    )
    return input_ids[:, -room:]


# -------------------------------------------------------------- processors


def apply_repetition_penalty(logits: torch.Tensor, previous: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide the logits of tokens already in ``previous`` by ``penalty`` (multiply the negative ones)."""
    import torch

    score = torch.gather(logits, 1, previous)  # (1, seq): the logits of the tokens seen so far
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, previous, score)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature``: below 1 sharper, above 1 flatter.  Applied *before* the softmax."""
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits (and any tied with the k-th), set the others to ``-inf``."""
    import torch

    kth_largest = torch.topk(logits, min(k, logits.shape[-1])).values[..., -1:]  # (1, 1)
    return logits.masked_fill(logits < kth_largest, -math.inf)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``p``; ``-inf`` for the rest.

    Sorted from the *least* likely up, a token is dropped while the mass of
    it and everything less likely is still ``<= 1 - p``: so the token that
    crosses ``p`` (counted from the top) is kept, and the most likely token
    always is.
    """
    import torch

    sorted_logits, order = torch.sort(logits, descending=False)  # least likely first
    mass_up_to = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (1, vocab)
    drop_sorted = mass_up_to <= (1 - p)
    drop_sorted[..., -1:] = False  # never drop the most likely token
    drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, -math.inf)


def process_logits(
    logits: torch.Tensor,
    previous: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    """Repetition penalty, temperature, top-k, top-p: in ``generate()``'s order, each only when it changes something."""
    if repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, previous, repetition_penalty)
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    return logits


# ------------------------------------------------------------------ the loop


def next_token_logits(
    model: PreTrainedModel, ids: torch.Tensor, cache: Any = None, use_cache: bool = True
) -> tuple[torch.Tensor, Any]:
    """Scores for the token after ``ids`` ``(batch, vocab)``, and the updated cache.

    With a cache only the tokens the cache has not seen yet are fed (one, after
    the first step); without, the whole sequence is recomputed every time.
    """
    import torch

    with torch.no_grad():
        if use_cache:
            seen = cache.get_seq_length() if cache is not None else 0
            name = cache_argument(model)
            mask = torch.ones_like(ids)  # covers cached + new tokens: no padding in one prompt
            out = model(input_ids=ids[:, seen:], attention_mask=mask, use_cache=True, **{name: cache})  # unseen only
            cache = out[name]
        else:
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    return out.logits[:, -1, :].float(), cache  # (batch, vocab)


def cache_argument(model: PreTrainedModel) -> str:
    """The name of the KV-cache argument (and output): ``cache`` from transformers 5.2x, ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _prepare(model: PreTrainedModel, input_ids: torch.Tensor, max_new_tokens: int, truncate: bool) -> torch.Tensor:
    """Eval mode, the prompt on the model's device, checked against the context."""
    model.eval()
    device = next(model.parameters()).device
    return fit_context(input_ids, model, max_new_tokens, truncate).to(device)


def greedy_decode(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    max_new_tokens: int = 20,
    eos_token_id: int | None = None,
    use_cache: bool = True,
    truncate: bool = False,
) -> torch.Tensor:
    """Always take the most likely next token; stop after ``eos_token_id``.  Returns prompt + new tokens, (1, seq)."""
    import torch

    ids = _prepare(model, input_ids, max_new_tokens, truncate)
    cache = None
    for _ in range(max_new_tokens):
        logits, cache = next_token_logits(model, ids, cache, use_cache)
        next_id = logits.argmax(dim=-1, keepdim=True)  # (1, 1)
        ids = torch.cat([ids, next_id], dim=-1)
        if eos_token_id is not None and next_id.item() == eos_token_id:
            break
    return ids


def sample_decode(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    max_new_tokens: int = 20,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    eos_token_id: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    truncate: bool = False,
) -> torch.Tensor:
    """Draw each next token from ``softmax(processed logits)``.

    ``seed`` calls ``torch.manual_seed(seed)`` first: the same seed before
    ``generate(do_sample=True, ...)`` draws the same tokens, because both draw
    with one ``torch.multinomial`` per step from the same probabilities.
    """
    import torch

    check_sampling(temperature, top_k, top_p, repetition_penalty)
    ids = _prepare(model, input_ids, max_new_tokens, truncate)
    if seed is not None:
        torch.manual_seed(seed)
    cache = None
    for _ in range(max_new_tokens):
        logits, cache = next_token_logits(model, ids, cache, use_cache)
        logits = process_logits(logits, ids, temperature, top_k, top_p, repetition_penalty)
        probs = logits.softmax(dim=-1)  # (1, vocab); filtered tokens have probability 0
        next_id = torch.multinomial(probs, num_samples=1)  # (1, 1)
        ids = torch.cat([ids, next_id], dim=-1)
        if eos_token_id is not None and next_id.item() == eos_token_id:
            break
    return ids


def beam_search(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    max_new_tokens: int = 20,
    num_beams: int = 4,
    eos_token_id: int | None = None,
    length_penalty: float = 1.0,
    truncate: bool = False,
) -> torch.Tensor:
    """Keep the ``num_beams`` best partial sequences by summed log-probability; return the best finished one.

    Each step every live beam proposes its continuations; the best
    ``2 * num_beams`` (over all beams) are ranked.  A candidate ending in
    end-of-text among the top ``num_beams`` is *finished*: it joins the
    finished list with score ``sum(log p) / new_tokens ** length_penalty``.
    The best ``num_beams`` unfinished candidates live on, and the KV cache is
    reordered to follow them (a beam may continue another beam's prefix).  At
    ``max_new_tokens`` the top candidates are finished as they are.  The search
    stops early once no live beam can beat the worst of ``num_beams`` finished
    ones (``generate()``'s default ``early_stopping=False`` test).
    """
    import torch

    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise CourseError(f"num_beams must be a positive integer, got {num_beams!r}")
    ids = _prepare(model, input_ids, max_new_tokens, truncate)
    beams = ids.repeat(num_beams, 1)  # (num_beams, seq): every beam starts as the prompt ...
    scores = torch.full((num_beams,), -1e9)
    scores[0] = 0.0  # ... but only the first counts, so step 1 does not pick the same token num_beams times
    finished: list[tuple[float, torch.Tensor]] = []  # (normalised score, sequence), best first
    cache = None
    for step in range(max_new_tokens):
        logits, cache = next_token_logits(model, beams, cache)  # (num_beams, vocab)
        vocab = logits.shape[-1]
        totals = (logits.log_softmax(dim=-1) + scores[:, None]).reshape(-1)  # (num_beams * vocab,)
        top_scores, top_index = torch.topk(totals, 2 * num_beams)  # best candidates over all beams
        from_beam, token = top_index // vocab, top_index % vocab
        last_step = step == max_new_tokens - 1
        new_tokens = step + 1
        can_improve = _can_improve(finished, scores[0].item(), new_tokens - 1, num_beams, length_penalty, step)
        live: list[int] = []
        for rank in range(2 * num_beams):
            ends = last_step or (eos_token_id is not None and token[rank].item() == eos_token_id)
            if ends:
                if rank < num_beams and can_improve:  # only the top num_beams may finish
                    sequence = torch.cat([beams[from_beam[rank]], token[rank : rank + 1]])
                    _add_finished(finished, top_scores[rank].item() / new_tokens**length_penalty, sequence, num_beams)
            elif len(live) < num_beams:
                live.append(rank)
        if last_step or len(live) < num_beams:
            break
        chosen = torch.tensor(live)
        beams = torch.cat([beams[from_beam[chosen]], token[chosen, None]], dim=-1)  # (num_beams, seq + 1)
        scores = top_scores[chosen]
        cache.reorder_cache(from_beam[chosen])  # each beam keeps the keys/values of the prefix it continues
        if not _can_improve(finished, scores[0].item(), new_tokens, num_beams, length_penalty, step + 1):
            break
    best = finished[0][1] if finished else beams[0]
    return best[None, :]  # (1, seq)


def _can_improve(
    finished: list[tuple[float, Any]],
    best_live: float,
    new_tokens: int,
    num_beams: int,
    length_penalty: float,
    step: int,
) -> bool:
    """generate()'s early-stop test: False once num_beams are finished and the best live beam cannot beat the worst."""
    if step == 0 or len(finished) < num_beams:
        return True
    return best_live / new_tokens**length_penalty > finished[-1][0]


def _add_finished(finished: list[tuple[float, Any]], score: float, sequence: Any, num_beams: int) -> None:
    """Insert a finished hypothesis, keep the best ``num_beams``, best first."""
    finished.append((score, sequence))
    finished.sort(key=lambda item: item[0], reverse=True)
    del finished[num_beams:]


# ------------------------------------------------------------ generate()


def generation_config(
    *,
    max_new_tokens: int = 40,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    num_beams: int = 1,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> GenerationConfig:
    """A checked ``GenerationConfig`` with the same knobs as the hand-written functions above."""
    from transformers import GenerationConfig

    if do_sample:
        check_sampling(temperature, top_k, top_p, repetition_penalty)
    elif (
        isinstance(repetition_penalty, bool)
        or not isinstance(repetition_penalty, (int, float))
        or (repetition_penalty <= 0)
    ):
        raise CourseError(f"repetition_penalty must be > 0 (1.0 = no penalty), got {repetition_penalty!r}")
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise CourseError(f"num_beams must be a positive integer, got {num_beams!r}")
    settings: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "num_beams": num_beams,
        "repetition_penalty": repetition_penalty,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id if pad_token_id is not None else eos_token_id,
    }
    if do_sample:  # generate() fills an unset top_k with 50: 0 says "no top-k", like top_k=None here
        settings.update(temperature=temperature, top_k=top_k or 0, top_p=top_p if top_p is not None else 1.0)
    return GenerationConfig(**settings)


def generate_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    *,
    seed: int | None = None,
    truncate: bool = False,
    **settings: Any,
) -> str:
    """``model.generate()`` on one prompt with :func:`generation_config` settings; returns prompt + continuation."""
    import torch

    config = generation_config(eos_token_id=tokenizer.eos_token_id, **settings)
    ids = tokenizer(prompt, return_tensors="pt", verbose=False).input_ids
    ids = _prepare(model, ids, config.max_new_tokens, truncate)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return tokenizer.decode(out[0], skip_special_tokens=True)
