"""ps5_generation's graded tests, their points, and typical mistakes with the points they keep.

Read by the shared assignment harness (tests/test_assignments.py).
"""

from nbgrader_harness import mistake

ASSIGNMENT = "ps5_generation"
POINTS = {
    "test_greedy_matches_generate": 2,
    "test_greedy_uses_cache": 2,
    "test_top_k": 1,
    "test_top_p": 2,
    "test_sample_plain": 1,
    "test_sample_temperature": 2,
    "test_sample_top_k_top_p": 2,
}

#: Drops the token that crosses p: keeps only tokens whose running mass INCLUDING themselves is < p.
TOP_P_OFF_BY_ONE = mistake(
    ASSIGNMENT,
    "top_p_filter",
    (
        "    mass_above = sorted_probs.cumsum(dim=-1) - sorted_probs\n    keep_sorted = mass_above < p\n",
        "    keep_sorted = sorted_probs.cumsum(dim=-1) < p\n",
    ),
)

#: Divides the probabilities, not the logits: multinomial renormalises, so the temperature does nothing.
TEMPERATURE_AFTER_SOFTMAX = mistake(
    ASSIGNMENT,
    "sample",
    ("logits = out.logits[:, -1, :] / temperature", "logits = out.logits[:, -1, :]"),
    (
        "next_id = torch.multinomial(logits.softmax(dim=-1), num_samples=1)",
        "probs = logits.softmax(dim=-1) / temperature\n            next_id = torch.multinomial(probs, num_samples=1)",
    ),
)

#: Right tokens, but the whole sequence is recomputed at every step.
NO_CACHE = mistake(
    ASSIGNMENT,
    "greedy_with_cache",
    ("ids, cache = input_ids, None", "ids = input_ids"),
    (
        "            new = ids if cache is None else ids[:, -1:]\n"
        "            out = model(input_ids=new, use_cache=True, **{CACHE: cache})\n"
        "            cache = out[CACHE]\n"
        "            next_id = out.logits",
        "            next_id = model(input_ids=ids).logits",
    ),
)

#: Uses the cache, but never stops at the end-of-text token.
IGNORES_EOS = mistake(
    ASSIGNMENT,
    "greedy_with_cache",
    ("            if eos_token_id is not None and next_id.item() == eos_token_id:\n                break\n", ""),
)

MISTAKES = {
    "top_p_off_by_one": ({"top_p_filter": TOP_P_OFF_BY_ONE}, {"test_top_p": 0, "test_sample_top_k_top_p": 0}),
    "temperature_after_softmax": ({"sample": TEMPERATURE_AFTER_SOFTMAX}, {"test_sample_temperature": 0}),
    "no_cache": ({"greedy_with_cache": NO_CACHE}, {"test_greedy_uses_cache": 0}),
    "ignores_eos": ({"greedy_with_cache": IGNORES_EOS}, {"test_greedy_matches_generate": 0}),
}
