"""Reference answers to notebook 04's exercises (kept out of the notebook; see README.md here)."""

ANSWERS = {
    "lora_forward": '''
def lora_forward(x, weight, bias, A, B, alpha, r):
    """x W^T + b + (alpha / r) * x A^T B^T, for x of shape (..., in)."""
    return torch.nn.functional.linear(x, weight, bias) + (alpha / r) * (x @ A.T @ B.T)
''',
    "count_trainable": '''
def count_trainable(model):
    """(number of trainable parameters, number of all parameters)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
''',
}
