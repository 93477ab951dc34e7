"""ps2_pipelines: tokenize, pool, embed and search by hand (cases for tests/test_assignments.py)."""

from nbgrader_harness import course_shortcuts

ASSIGNMENT = "ps2_pipelines"
POINTS = {
    "test_tokenize": 2,
    "test_mean_pool_shape": 1,
    "test_mean_pool_padding": 2,
    "test_embed": 2,
    "test_cosine": 1,
    "test_search": 2,
}

PADS_TO_MAX_LENGTH = '''
def tokenize_batch(tokenizer, texts, max_length):
    """Pads every text to max_length: correct tokens, wasted compute, wrong shape."""
    return tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
'''

MEAN_OVER_PADDING = '''
def mean_pool(last_hidden_state, attention_mask):
    """Averages every position, padding included."""
    return last_hidden_state.mean(dim=1)
'''

DOT_PRODUCT = '''
def cosine_similarity(a, b):
    """A dot product: right only for vectors of length 1."""
    return a @ b.T


def search(query, corpus, k):
    scores = cosine_similarity(query.unsqueeze(0), corpus)[0]
    top = torch.topk(scores, k)
    return [(int(i), float(s)) for i, s in zip(top.indices, top.values)]
'''

WORST_FIRST = '''
def cosine_similarity(a, b):
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    return a @ b.T


def search(query, corpus, k):
    """Sorts ascending: returns the k LEAST similar rows."""
    scores = cosine_similarity(query.unsqueeze(0), corpus)[0]
    order = torch.argsort(scores)[:k]
    return [(int(i), float(scores[i])) for i in order]
'''

ALWAYS_EQUAL = '''
class AlwaysEqual:
    """Equal to anything, with any shape."""
    shape = property(lambda self: AlwaysEqual())
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __iter__(self): return iter(())
    def __len__(self): return 0
    def __getattr__(self, name): return lambda *a, **k: AlwaysEqual()
    def __getitem__(self, key): return AlwaysEqual()
    def __sub__(self, other): return AlwaysEqual()
    def __abs__(self): return AlwaysEqual()
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __ge__(self, other): return True
    def __bool__(self): return True
''' + "\n".join(
    f"def {name}(*args, **kwargs): return AlwaysEqual()"
    for name in ("tokenize_batch", "mean_pool", "embed", "cosine_similarity", "search")
)

MISTAKES = {
    "pads_to_max_length": ({"tokenize": PADS_TO_MAX_LENGTH}, {"test_tokenize": 0}),
    # Averaging over padding breaks pooling and, through it, the embeddings of a padded batch.
    "mean_over_padding": ({"mean_pool": MEAN_OVER_PADDING}, {"test_mean_pool_padding": 0, "test_embed": 0}),
    # A dot product is only right for vectors of length 1: the hidden search test uses raw vectors.
    "dot_product": ({"search": DOT_PRODUCT}, {"test_cosine": 0, "test_search": 0}),
    "worst_first": ({"search": WORST_FIRST}, {"test_search": 0}),
    "always_equal": (
        {"tokenize": ALWAYS_EQUAL, "mean_pool": "", "embed": "", "search": ""},
        dict.fromkeys(POINTS, 0),
    ),
}

#: The course's own pooling (course.pipelines), reached by every route.  Without it,
#: embed() (and so the search test on embeddings) has no mean_pool either.
SHORTCUTS = course_shortcuts(
    "course.pipelines",
    ["mean_pool"],
    "mean_pool",
    "mean_pool = lib.mean_pool",
    {"test_mean_pool_shape": 0, "test_mean_pool_padding": 0, "test_embed": 0, "test_search": 0},
)
