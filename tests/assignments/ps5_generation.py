"""ps5_generation's graded tests, their points, and typical mistakes with the points they keep.

Read by the shared assignment harness (tests/test_assignments.py).
"""

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

TOP_P_OFF_BY_ONE = '''
def top_p_filter(logits, p):
    """Drops the token that crosses p: keeps only tokens whose running mass INCLUDING themselves is < p."""
    probs = logits.softmax(dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    keep_sorted = sorted_probs.cumsum(dim=-1) < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))
'''

TEMPERATURE_AFTER_SOFTMAX = '''
def sample(model, input_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eos_token_id=None):
    """Divides the probabilities, not the logits: multinomial renormalises, so the temperature does nothing."""
    ids, cache = input_ids, None
    with torch.no_grad():
        for _ in range(max_new_tokens):
            new = ids if cache is None else ids[:, -1:]
            out = model(input_ids=new, use_cache=True, **{CACHE: cache})
            cache = out[CACHE]
            logits = out.logits[:, -1, :]
            if top_k is not None:
                logits = top_k_filter(logits, top_k)
            if top_p is not None:
                logits = top_p_filter(logits, top_p)
            probs = logits.softmax(dim=-1) / temperature
            next_id = torch.multinomial(probs, num_samples=1)
            ids = torch.cat([ids, next_id], dim=-1)
            if eos_token_id is not None and next_id.item() == eos_token_id:
                break
    return ids
'''

NO_CACHE = '''
def greedy_with_cache(model, input_ids, max_new_tokens, eos_token_id=None):
    """Right tokens, but the whole sequence is recomputed at every step."""
    ids = input_ids
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = model(input_ids=ids).logits[:, -1, :].argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=-1)
            if eos_token_id is not None and next_id.item() == eos_token_id:
                break
    return ids
'''

IGNORES_EOS = '''
def greedy_with_cache(model, input_ids, max_new_tokens, eos_token_id=None):
    """Uses the cache, but never stops at the end-of-text token."""
    ids, cache = input_ids, None
    with torch.no_grad():
        for _ in range(max_new_tokens):
            new = ids if cache is None else ids[:, -1:]
            out = model(input_ids=new, use_cache=True, **{CACHE: cache})
            cache = out[CACHE]
            ids = torch.cat([ids, out.logits[:, -1, :].argmax(dim=-1, keepdim=True)], dim=-1)
    return ids
'''

MISTAKES = {
    "top_p_off_by_one": ({"top_p_filter": TOP_P_OFF_BY_ONE}, {"test_top_p": 0, "test_sample_top_k_top_p": 0}),
    "temperature_after_softmax": ({"sample": TEMPERATURE_AFTER_SOFTMAX}, {"test_sample_temperature": 0}),
    "no_cache": ({"greedy_with_cache": NO_CACHE}, {"test_greedy_uses_cache": 0}),
    "ignores_eos": ({"greedy_with_cache": IGNORES_EOS}, {"test_greedy_matches_generate": 0}),
}
