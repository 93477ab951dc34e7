"""Reference answers for notebooks/05_generation.ipynb's exercises (substituted by tests/test_exercises.py)."""

ANSWERS = {
    "top_p_keep": """def top_p_keep(probs, p):
    sorted_probs, order = torch.sort(probs, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs    # probability of the tokens ranked above
    keep_sorted = mass_before < p                           # the token that crosses p is still kept
    return torch.zeros_like(keep_sorted).scatter(0, order, keep_sorted)
""",
    "kv_cache_bytes": """def kv_cache_bytes(n_layer, n_embd, tokens, bytes_per_number=4):
    return 2 * n_layer * tokens * n_embd * bytes_per_number
""",
}
