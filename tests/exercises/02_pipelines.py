"""Reference answers to notebook 02's exercises (kept out of the notebook; see README.md here)."""

ANSWERS = {
    "masked_mean_pool": '''def my_mean_pool(hidden, mask):
    """(batch, seq, dim) token vectors + (batch, seq) mask -> (batch, dim) mean of the real tokens."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)                    # (batch, seq, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
''',
    "classification_postprocess": '''def my_postprocess(logits, id2label):
    """(batch, labels) logits -> [{"label": name, "score": probability of that label}, ...], one per text."""
    probabilities = logits.float().softmax(dim=-1)                # (batch, labels)
    scores, ids = probabilities.max(dim=-1)                       # (batch,), (batch,)
    return [{"label": id2label[int(i)], "score": float(s)} for s, i in zip(scores, ids)]
''',
}
