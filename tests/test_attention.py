"""course.attention: extraction on any model, recomputation by hand, head summaries, bad input."""

import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import transformers as T

from course.assets import load_model, load_tokenizer
from course.attention import (
    AttentionMaps,
    TruncationWarning,
    attention_probabilities,
    capture,
    causal_mask,
    compare,
    eager_attention,
    extract,
    merge_heads,
    padding_mask,
    recompute,
    recompute_from,
    split_heads,
    summarize_heads,
)
from course.errors import CourseError
from course.tiny import TINY_FAMILIES, tiny_model, tiny_random

TOL = 1e-5  # float32, as the lesson promises
TEXTS = ["The cat sat on the mat.", "Dogs bark at the mail carrier every single morning, and the cat hides."]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def minilm():
    return load_model()


#: Families recompute() must match: course.tiny's tiny models (the same ones lesson 01 and the bench build).
DECODERS = {"gpt2", "opt"}


# ------------------------------------------------------------------ the formula


def test_split_and_merge_heads_are_inverse_and_slice_features_per_head():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 2)
    assert torch.equal(heads[1, 2, 0], x[1, 0, 4:6])  # head 2 owns features 4..5
    assert torch.equal(merge_heads(heads), x)


def test_split_heads_rejects_uneven_split():
    with pytest.raises(CourseError, match="cannot split 10 features into 4"):
        split_heads(torch.zeros(1, 2, 10), 4)


def test_masks_shapes_and_meaning():
    pad = padding_mask(torch.tensor([[1, 1, 0]]))
    assert pad.shape == (1, 1, 1, 3) and pad.dtype == torch.bool and pad.tolist() == [[[[True, True, False]]]]
    causal = causal_mask(3)
    assert causal.tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_attention_probabilities_matches_torch_sdpa():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    mask = padding_mask(torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])) & causal_mask(5)
    ours = attention_probabilities(q, k, mask=mask) @ v
    theirs = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_attention_probabilities_masked_keys_get_zero_and_empty_rows_are_uniform():
    scores_q, scores_k = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    mask = torch.tensor([[True, True, False], [False, False, False], [True, False, True]])
    probs = attention_probabilities(scores_q, scores_k, mask=mask)[0, 0]
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    assert probs[0, 2] == 0 and probs[2, 1] == 0
    assert torch.allclose(probs[1], torch.full((3,), 1 / 3))  # no NaN when nothing is allowed


def test_default_scale_is_one_over_sqrt_d():
    q = torch.tensor([[[1.0, 0, 0, 0]]])
    k = torch.tensor([[[4.0, 0, 0, 0], [0.0, 0, 0, 0]]])
    probs = attention_probabilities(q, k)
    expected = torch.softmax(torch.tensor([4.0 / math.sqrt(4), 0.0]), -1)
    assert torch.allclose(probs[0, 0], expected)


# ------------------------------------------------------------ extract: default model


def test_extract_default_model_shapes_tokens_and_restores_sdpa(minilm, tokenizer):
    assert minilm.config._attn_implementation == "sdpa"  # the transformers 5 default: no weights
    maps = extract(minilm, tokenizer, TEXTS[0])
    assert isinstance(maps, AttentionMaps)
    assert maps.tokens == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"]
    assert maps.attentions.shape == (6, 12, 9, 9) and maps.attentions.dtype == torch.float32
    assert torch.allclose(maps.attentions.sum(-1), torch.ones(6, 12, 9), atol=1e-5)
    assert maps.special == [True] + [False] * 7 + [True] and not maps.causal and not maps.truncated
    assert minilm.config._attn_implementation == "sdpa" and not minilm.training


def test_extract_batch_gives_one_map_per_text_without_padding(minilm, tokenizer):
    batch = extract(minilm, tokenizer, TEXTS)
    assert [len(m.tokens) for m in batch] == [len(extract(minilm, tokenizer, t).tokens) for t in TEXTS]
    for maps, text in zip(batch, TEXTS, strict=True):
        alone = extract(minilm, tokenizer, text)
        assert maps.tokens == alone.tokens and "[PAD]" not in maps.tokens
        assert torch.allclose(maps.attentions, alone.attentions, atol=TOL)


def test_eager_attention_restores_mode_and_implementation_after_an_error(minilm):
    minilm.train()
    with pytest.raises(RuntimeError, match="boom"), eager_attention(minilm):
        assert minilm.config._attn_implementation == "eager" and not minilm.training
        raise RuntimeError("boom")
    assert minilm.config._attn_implementation == "sdpa" and minilm.training
    minilm.eval()


# ------------------------------------------------------------- recompute by hand


def test_recompute_matches_default_model_every_layer_with_padding(minilm, tokenizer):
    errors = compare(minilm, tokenizer, TEXTS)  # padded batch: the padding mask matters
    assert len(errors) == 6 and max(errors) <= TOL
    single = recompute(minilm, tokenizer, TEXTS[1], layer=5)
    maps = extract(minilm, tokenizer, TEXTS[1])
    assert single.shape == (12, len(maps.tokens), len(maps.tokens))
    assert torch.allclose(single, maps.attentions[5], atol=TOL)
    assert minilm.config._attn_implementation == "sdpa"


def test_recompute_batch_masks_padding_keys(minilm, tokenizer):
    probs = recompute(minilm, tokenizer, TEXTS, layer=0)
    short = len(extract(minilm, tokenizer, TEXTS[0]).tokens)
    assert probs.shape[0] == 2 and probs.shape[1] == 12
    assert torch.count_nonzero(probs[0, :, :, short:]) == 0  # nobody attends to [PAD]


def test_recompute_really_uses_the_layer_input_and_the_hand_built_mask(minilm, tokenizer):
    """Exact agreement is not a copy: change the input or drop the mask and the result moves."""
    layer = capture(minilm, tokenizer, TEXTS)[2]
    assert torch.equal(recompute_from(layer, 12), layer.weights)  # same float ops as transformers' eager path
    unmasked = replace(layer, attention_mask=torch.ones_like(layer.attention_mask))
    assert (recompute_from(unmasked, 12) - layer.weights).abs().max() > 0.05, "the padding mask must matter"
    silent = replace(layer, inputs=torch.zeros_like(layer.inputs))  # q = k = bias for every token
    short = int(layer.attention_mask[0].sum())
    uniform = recompute_from(silent, 12)[0, :, :, :short]
    assert torch.allclose(uniform, torch.full_like(uniform, 1 / short), atol=1e-6)


def test_tiny_families_cover_encoders_and_decoders_and_refuse_unknown_ones(tokenizer):
    assert DECODERS < set(TINY_FAMILIES) and len(TINY_FAMILIES) == 7
    with pytest.raises(CourseError, match="no tiny model of 'llama': the families are gpt2, opt"):
        tiny_model("llama", tokenizer)


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_recompute_matches_model_across_families(family, tokenizer):
    model = tiny_model(family, tokenizer)
    errors = compare(model, tokenizer, TEXTS)
    assert errors and max(errors) <= TOL, f"{family}: max error {max(errors):.2e}"
    maps = extract(model, tokenizer, TEXTS[1])
    assert maps.causal == (family in DECODERS)
    by_hand = recompute(model, tokenizer, TEXTS[1], layer=maps.num_layers - 1)
    assert torch.allclose(by_hand, maps.attentions[-1], atol=TOL)
    if maps.causal:  # a decoder's token never sees the future
        assert torch.count_nonzero(maps.attentions.triu(diagonal=1)) == 0


def test_recompute_refuses_rotary_models_with_a_clear_message(tokenizer):
    llama = tiny_random(
        T.LlamaConfig,
        T.LlamaForCausalLM,
        tokenizer,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=64,
        intermediate_size=128,
    )
    assert extract(llama, tokenizer, "hello there").attentions.shape[:2] == (1, 4)  # weights: fine
    with pytest.raises(CourseError, match="absolute positions.*LlamaForCausalLM"):
        recompute(llama, tokenizer, "hello there", 0)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("text", ["", "   \n", []])
def test_empty_text_is_one_clear_error(minilm, tokenizer, text):
    with pytest.raises(CourseError, match="empty|no text"):
        extract(minilm, tokenizer, text)


def test_too_long_text_is_truncated_and_says_so(minilm, tokenizer):
    with pytest.warns(TruncationWarning, match="reads at most 512: keeping the first 512"):
        maps = extract(minilm, tokenizer, "word " * 600)
    assert maps.truncated and len(maps.tokens) == 512 and "truncated" in repr(maps)


@pytest.mark.parametrize(
    ("layer", "head", "message"), [(6, 0, "layer 6 is out of range"), (0, 12, "head 12"), (-1, 0, "layer -1")]
)
def test_layer_or_head_out_of_range(minilm, tokenizer, layer, head, message):
    maps = extract(minilm, tokenizer, "hello")
    with pytest.raises(CourseError, match=message):
        maps.head(layer, head)


def test_recompute_layer_out_of_range(minilm, tokenizer):
    with pytest.raises(CourseError, match="layer 6 is out of range: there are 6 layers, numbered 0 to 5"):
        recompute(minilm, tokenizer, "hello", 6)


def test_model_without_attention_weights(tokenizer):
    mamba = tiny_random(T.MambaConfig, T.MambaModel, tokenizer, num_hidden_layers=1, hidden_size=16, state_size=4)
    with pytest.raises(CourseError, match="MambaModel returned no attention weights"):
        extract(mamba, tokenizer, "hello")


def test_not_a_hugging_face_model(tokenizer):
    with pytest.raises(CourseError, match="expected a Hugging Face model"):
        extract(torch.nn.Linear(2, 2), tokenizer, "hello")


# -------------------------------------------------------------- head summaries


def crafted(pattern: torch.Tensor, ids: list[int], special: list[bool]) -> AttentionMaps:
    """AttentionMaps with one layer and one head of a chosen pattern."""
    return AttentionMaps(
        text="x",
        tokens=[str(i) for i in ids],
        attentions=pattern[None, None],
        input_ids=ids,
        special=special,
        causal=False,
    )


def test_summaries_score_known_patterns():
    n = 5
    ids, special = [1, 7, 8, 7, 2], [True, False, False, False, True]
    previous = crafted(torch.eye(n).roll(-1, dims=1), ids, special)  # row i -> column i-1
    previous.attentions[0, 0, 0] = torch.eye(n)[0]  # the first token has no previous one: itself
    summary = summarize_heads(previous)
    assert summary.previous.item() == pytest.approx(1.0) and summary.next.item() == pytest.approx(0.0)
    assert summary.entropy.item() == pytest.approx(0.0, abs=1e-6)
    uniform = summarize_heads(crafted(torch.full((n, n), 1 / n), ids, special))
    assert uniform.entropy.item() == pytest.approx(math.log(n))
    assert uniform.special.item() == pytest.approx(2 / n)
    assert uniform.same_token.item() == pytest.approx((1 / n) * 2 / n)  # only the two 7s see each other
    assert summarize_heads(crafted(torch.eye(n), ids, special)).itself.item() == pytest.approx(1.0)


def test_summaries_find_a_previous_token_head_in_the_pretrained_model(minilm, tokenizer):
    summary = summarize_heads(extract(minilm, tokenizer, TEXTS))  # averaged over both texts
    assert summary.entropy.shape == (6, 12)
    (layer, head, score), *_ = summary.top("previous", k=3)
    assert score > 0.8, "MiniLM has a sharp previous-token head"
    assert summary.top("entropy", k=1, largest=False)[0][2] < summary.entropy.mean()
    with pytest.raises(CourseError, match="unknown pattern"):
        summary.top("diagonal")


def test_import_stays_light():
    code = (
        "import sys, course.attention, course.viz; "
        "heavy = [m for m in ('torch', 'transformers', 'matplotlib', 'ipywidgets') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
