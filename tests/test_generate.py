"""Lesson 05's decoding by hand against ``generate()``, on a tiny random GPT-2 (fast, no training)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from course.errors import CourseError
from course.generate import decoding
from course.generate.decoding import (
    ContextWarning,
    beam_search,
    fit_context,
    generation_config,
    greedy_decode,
    sample_decode,
    top_k_filter,
    top_p_filter,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

EOS = 3


@pytest.fixture(scope="module")
def tiny():
    """A random GPT-2 small enough to run generate() in milliseconds; EOS = token 3."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=97,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # bigger logits than the default init: peaked, varied distributions
        model.lm_head.weight.mul_(8)
    return model


def _generate(model, ids, seed=None, **settings):
    config = generation_config(eos_token_id=EOS, **settings)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)


PROMPTS = [[5, 17, 42], [8], [60, 61, 62, 63, 1, 2]]


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_by_hand_equals_generate(tiny, prompt, use_cache):
    ids = torch.tensor([prompt])
    expected = _generate(tiny, ids, max_new_tokens=25)
    got = greedy_decode(tiny, ids, 25, eos_token_id=EOS, use_cache=use_cache)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"temperature": 0.7},
        {"top_k": 5},
        {"top_p": 0.8},
        {"temperature": 1.3, "top_k": 20, "top_p": 0.9},
        {"repetition_penalty": 1.5, "top_p": 0.95},
    ],
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "plain",
)
@pytest.mark.parametrize("seed", [0, 1])
def test_seeded_sampling_by_hand_equals_generate(tiny, settings, seed):
    ids = torch.tensor([[5, 17, 42]])
    expected = _generate(tiny, ids, seed=seed, max_new_tokens=30, do_sample=True, **settings)
    got = sample_decode(tiny, ids, 30, eos_token_id=EOS, seed=seed, **settings)
    assert got.tolist() == expected.tolist()


def test_different_seeds_draw_different_texts(tiny):
    ids = torch.tensor([[5, 17, 42]])
    draws = {tuple(sample_decode(tiny, ids, 30, seed=seed)[0].tolist()) for seed in range(4)}
    assert len(draws) > 1


@pytest.mark.parametrize("num_beams", [2, 4])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_beam_search_by_hand_equals_generate(tiny, prompt, num_beams):
    ids = torch.tensor([prompt])
    expected = _generate(tiny, ids, max_new_tokens=20, num_beams=num_beams)
    got = beam_search(tiny, ids, 20, num_beams=num_beams, eos_token_id=EOS)
    assert got.tolist() == expected.tolist()


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(tiny):
    ids = torch.tensor([[5, 17, 42]])

    def log_prob(sequence):
        with torch.no_grad():
            logits = tiny(sequence).logits.log_softmax(-1)
        new = sequence[0, ids.shape[1] :]
        return logits[0, ids.shape[1] - 1 : -1].gather(1, new[:, None]).sum().item()

    greedy = greedy_decode(tiny, ids, 8)
    beam = beam_search(tiny, ids, 8, num_beams=4)
    assert log_prob(beam) >= log_prob(greedy) - 1e-4


def test_top_p_keeps_the_smallest_most_likely_set_reaching_p():
    probs = torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15]])
    kept = torch.isfinite(top_p_filter(probs.log(), 0.8))[0].tolist()
    # sorted: 0.4, 0.3 (0.7 < 0.8), 0.15 (0.85 >= 0.8: the crossing token is kept), then dropped
    assert kept == [False, True, False, True, True]
    assert torch.isfinite(top_p_filter(probs.log(), 0.01))[0].tolist() == [False, True, False, False, False]
    assert torch.isfinite(top_p_filter(probs.log(), 1.0)).all()


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    assert torch.isfinite(top_k_filter(logits, 2))[0].tolist() == [False, True, False, True, False]
    assert torch.isfinite(top_k_filter(logits, 50)).all()


def test_temperature_sharpens_before_the_softmax():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    cold = decoding.apply_temperature(logits, 0.5).softmax(-1)
    hot = decoding.apply_temperature(logits, 2.0).softmax(-1)
    assert cold.max() > logits.softmax(-1).max() > hot.max()


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = decoding.apply_repetition_penalty(logits, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"temperature": 0}, "temperature must be > 0"),
        ({"temperature": -1.0}, "temperature must be > 0"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_k": 2.5}, "top_k must be an integer >= 1"),
        ({"repetition_penalty": 0}, "repetition_penalty must be > 0"),
    ],
)
def test_bad_sampling_settings_are_one_clear_line(tiny, settings, message):
    for call in (
        lambda: sample_decode(tiny, torch.tensor([[1, 2]]), 5, **settings),
        lambda: generation_config(do_sample=True, **settings),
    ):
        with pytest.raises(CourseError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value)


def test_prompt_longer_than_the_context_is_an_error_or_a_warned_cut(tiny):
    long = torch.arange(60)[None, :] % 90 + 4
    with pytest.raises(CourseError, match="exceeds the model's context of 64"):
        greedy_decode(tiny, long, 10)
    with pytest.warns(ContextWarning, match="prompt cut from 60 to its last 54 tokens"):
        out = greedy_decode(tiny, long, 10, truncate=True)
    assert out.shape[1] <= 64 and out[0, :54].tolist() == long[0, -54:].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_context(long[:, :10], tiny, 10) is not None  # fits: no warning


def test_empty_prompt_and_bad_lengths(tiny):
    with pytest.raises(CourseError, match="prompt is empty"):
        greedy_decode(tiny, torch.zeros((1, 0), dtype=torch.long), 5)
    with pytest.raises(CourseError, match="max_new_tokens must be a positive integer"):
        greedy_decode(tiny, torch.tensor([[1]]), 0)
    with pytest.raises(CourseError, match="num_beams must be a positive integer"):
        beam_search(tiny, torch.tensor([[1]]), 5, num_beams=0)


def test_cache_and_no_cache_give_the_same_next_token_scores(tiny):
    ids = torch.tensor([[5, 17, 42, 8, 9]])
    _, cache = decoding.next_token_logits(tiny, ids[:, :4])
    cached, _ = decoding.next_token_logits(tiny, ids, cache)
    full, _ = decoding.next_token_logits(tiny, ids, use_cache=False)
    assert torch.allclose(cached, full, atol=1e-5)
    assert not math.isnan(cached.sum().item())
