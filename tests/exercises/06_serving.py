"""Reference answers to notebook 06's exercises (kept out of the notebook; see README.md here)."""

ANSWERS = {
    "mean_batch_size": '''
def mean_batch_size(text, task):
    """Mean requests per model call for `task`, from Prometheus text."""
    values = {}
    for line in text.splitlines():
        for kind in ("sum", "count"):
            if line.startswith(f'course_batch_size_{kind}{{task="{task}"}}'):
                values[kind] = float(line.split()[-1])
    return values["sum"] / values["count"]
''',
    "split_on_oom": '''
def split_on_oom(run, items):
    """run(items), halving the batch after each torch.OutOfMemoryError."""
    try:
        return list(run(items))
    except torch.OutOfMemoryError:
        if len(items) == 1:
            raise
    middle = len(items) // 2
    return split_on_oom(run, items[:middle]) + split_on_oom(run, items[middle:])
''',
}
