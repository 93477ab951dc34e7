"""Reference answers to notebooks/01_attention.ipynb's exercises (kept out of the notebook students see)."""

ANSWERS = {
    "split_heads": """
heads = config.num_attention_heads
d = config.hidden_size // heads
print(f"{heads} heads x {d} features = {heads * d}")

q_heads = q.view(1, seq, heads, d).transpose(1, 2)   # (batch, heads, seq, d)
""",
    "sqrt_d_variance": """
dims = [16, 64, 256, 1024]
raw_var, scaled_var = [], []
torch.manual_seed(0)
for d_try in dims:
    queries, keys = torch.randn(2000, d_try), torch.randn(2000, d_try)
    dots = (queries * keys).sum(-1)                                 # (2000,)
    raw_var.append(dots.var().item())
    scaled_var.append((dots / math.sqrt(d_try)).var().item())
""",
}
