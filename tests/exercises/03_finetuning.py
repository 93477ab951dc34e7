"""Reference answers to notebook 03's exercises (kept out of the notebook; see README.md here)."""

ANSWERS = {
    "train_step_by_hand": '''def my_train_step(model, micro_batches, optimizer, autocast):
    """One optimizer step over the accumulated micro-batches; return the mean loss (a float)."""
    total = 0.0
    for batch in micro_batches:
        with autocast:
            loss = model(**batch).loss / len(micro_batches)   # each micro-batch's share of the mean
        loss.backward()                                       # gradients add up in .grad
        total += loss.item()
    optimizer.step()
    optimizer.zero_grad()
    return total
''',
    "fixed_memory_prediction": """n_parameters = sum(p.numel() for p in model.parameters())
my_fixed_mib = n_parameters * (4 + 8) / 2**20   # gradient 4 bytes + AdamW's two moments 8 bytes, per parameter
""",
}
