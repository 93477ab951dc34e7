"""ps1_attention: attention by hand, matched against MiniLM and GPT-2 (cases for tests/test_assignments.py)."""

from nbgrader_harness import course_shortcuts, mistake

ASSIGNMENT = "ps1_attention"
POINTS = {
    "test_split_merge": 1,
    "test_split_merge_hidden": 1,
    "test_attention_formula": 2,
    "test_attention_formula_hidden": 1,
    "test_masks": 1,
    "test_masks_hidden": 1,
    "test_attention_masked": 1,
    "test_attention_masked_hidden": 1,
    "test_match_model": 2,
    "test_match_model_padded": 1,
    "test_match_decoder": 1,
}

NO_SCALING = mistake(ASSIGNMENT, "attention", (" / math.sqrt(d)", ""))

MASK_AFTER_SOFTMAX = '''
def scaled_dot_product_attention(q, k, v, mask=None):
    """Masks the weights instead of the scores: rows no longer sum to 1."""
    d = q.shape[-1]
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights
'''

SPLIT_WITHOUT_TRANSPOSE = '''
def split_heads(x, num_heads):
    """Views straight to (batch, heads, seq, d): mixes tokens and heads."""
    batch, seq, features = x.shape
    if features % num_heads != 0:
        raise ValueError("features must divide by num_heads")
    return x.reshape(batch, num_heads, seq, features // num_heads)


def merge_heads(x):
    batch, heads, seq, d = x.shape
    return x.reshape(batch, seq, heads * d)
'''

CAUSAL_MASK_ON_THE_CPU = mistake(ASSIGNMENT, "masks", (", device=device).tril()", ").tril()"))

IGNORES_CAUSAL = '''
def self_attention(x, query, key, value, num_heads, attention_mask=None, causal=False):
    """Forgets the causal flag: right for encoders, wrong for decoders."""
    q, k, v = (split_heads(project(x), num_heads) for project in (query, key, value))
    mask = None if attention_mask is None else padding_mask(attention_mask)
    output, weights = scaled_dot_product_attention(q, k, v, mask)
    return merge_heads(output), weights
'''

# An answer that tries to pass by claiming to equal everything.
ALWAYS_EQUAL = {
    "split_merge": '''
class AlwaysEqual:
    """Equal to anything, with any shape."""
    shape = property(lambda self: AlwaysEqual())
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __iter__(self): return iter(())
    def __getattr__(self, name): return lambda *a, **k: AlwaysEqual()
    def __getitem__(self, key): return AlwaysEqual()
    def __sub__(self, other): return AlwaysEqual()
    def __bool__(self): return True

def split_heads(x, num_heads): return AlwaysEqual()
def merge_heads(x): return AlwaysEqual()
''',
    "attention": "def scaled_dot_product_attention(q, k, v, mask=None): return AlwaysEqual(), AlwaysEqual()",
    "masks": "def padding_mask(m): return AlwaysEqual()\ndef causal_mask(n, device=None): return AlwaysEqual()",
    "self_attention": "def self_attention(x, *args, **kwargs): return AlwaysEqual(), AlwaysEqual()",
}

MISTAKES = {
    # Forgetting 1/sqrt(d) costs the formula tests and the end-to-end MiniLM match, nothing else.
    "no_scaling": (
        {"attention": NO_SCALING},
        {"test_attention_formula": 0, "test_attention_formula_hidden": 0, "test_match_model": 0},
    ),
    "mask_after_softmax": (
        {"attention": MASK_AFTER_SOFTMAX},
        {"test_attention_masked": 0, "test_attention_masked_hidden": 0},
    ),
    "split_without_transpose": (
        {"split_merge": SPLIT_WITHOUT_TRANSPOSE},
        {"test_split_merge": 0, "test_split_merge_hidden": 0, "test_match_model": 0},
    ),
    "causal_mask_on_the_cpu": ({"masks": CAUSAL_MASK_ON_THE_CPU}, {"test_masks": 0}),
    # Only the hidden GPT-2 test catches it; the visible MiniLM part keeps its points.
    "ignores_causal": ({"self_attention": IGNORES_CAUSAL}, {"test_match_decoder": 0}),
    "always_equal": (ALWAYS_EQUAL, dict.fromkeys(POINTS, 0)),
}

VISIBLE_PASS = ["ignores_causal"]

#: The course's own masks (course.attention), reached by every route.
SHORTCUTS = course_shortcuts(
    "course.attention",
    ["padding_mask", "causal_mask"],
    "masks",
    "padding_mask = lib.padding_mask\ncausal_mask = lib.causal_mask",
    {"test_masks": 0, "test_masks_hidden": 0, "test_match_model": 0},
)
