"""Problem set 2 (pipelines by hand), end to end through nbgrader.

The source passes every test, the released stubs fail every one, and
typical mistakes lose exactly the points of the tests they break.  All
submissions are autograded in one nbgrader call (a kernel, a torch import and
a MiniLM load per notebook are the cost).
"""

import nbformat
import pytest
from nbgrader_harness import autograde, course_copy, fill_solutions, generate, run_tests, source_solutions

ASSIGNMENT = "ps2_pipelines"
POINTS = {
    "test_tokenize": 2,
    "test_mean_pool_shape": 1,
    "test_mean_pool_padding": 2,
    "test_embed": 2,
    "test_cosine": 1,
    "test_search": 2,
}

# Typical mistakes, each replacing one solution cell.
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
'''


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course dir with ps2 generated: (course_dir, release notebook path)."""
    course_dir = course_copy(tmp_path_factory.mktemp("ps2"), ASSIGNMENT)
    return course_dir, generate(course_dir, ASSIGNMENT)


@pytest.fixture(scope="module")
def answers(course):
    course_dir, _ = course
    return source_solutions(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")


@pytest.fixture(scope="module")
def submissions(course, answers, tmp_path_factory):
    """Notebooks of a class: the right answers, the stubs, and typical mistakes."""
    _, release_nb = course
    folder = tmp_path_factory.mktemp("subs")
    crafted = ALWAYS_EQUAL + "\n".join(
        f"def {name}(*args, **kwargs): return AlwaysEqual()"
        for name in ("tokenize_batch", "mean_pool", "embed", "cosine_similarity", "search")
    )
    variants = {
        "correct": {},
        "pads_to_max_length": {"tokenize": PADS_TO_MAX_LENGTH},
        "mean_over_padding": {"mean_pool": MEAN_OVER_PADDING},
        "dot_product": {"search": DOT_PRODUCT},
        "worst_first": {"search": WORST_FIRST},
        "always_equal": {"tokenize": crafted, "mean_pool": "", "embed": "", "search": ""},
    }
    notebooks = {"stub": release_nb}
    for student, changes in variants.items():
        notebooks[student] = fill_solutions(release_nb, {**answers, **changes}, folder / f"{student}.ipynb")
    return notebooks


@pytest.fixture(scope="module")
def grades(course, submissions):
    course_dir, _ = course
    return autograde(course_dir, ASSIGNMENT, submissions)


def expected(*zeroed: str) -> dict[str, int]:
    """Full points on every test cell except those named."""
    return {grade_id: (0 if grade_id in zeroed else points) for grade_id, points in POINTS.items()}


@pytest.mark.slow
def test_source_passes_and_stubs_fail(course):
    course_dir, release_nb = course
    assert run_tests(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb") == {gid: True for gid in POINTS}
    assert run_tests(release_nb) == {gid: False for gid in POINTS}


@pytest.mark.slow
def test_release_hides_solutions_and_hidden_tests(course):
    _, release_nb = course
    cells = nbformat.read(release_nb, as_version=4).cells
    text = "\n".join(cell.source for cell in cells)
    assert "HIDDEN TESTS" not in text and "perturbed copy of row 13" not in text
    assert "BEGIN SOLUTION" not in text and "clamp(min=1e-9)" not in text
    stubs = {
        cell.metadata.nbgrader.grade_id: cell.source.count("raise NotImplementedError()")
        for cell in cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }
    assert stubs == {"tokenize": 1, "mean_pool": 1, "embed": 1, "search": 2}


@pytest.mark.slow
def test_autograde_full_marks_for_the_correct_answers(grades):
    assert grades["correct"]["grades"] == expected()
    assert grades["correct"]["score"] == grades["correct"]["max_score"] == sum(POINTS.values())


@pytest.mark.slow
def test_autograde_zero_for_stubs_and_for_an_object_equal_to_everything(grades):
    for student in ("stub", "always_equal"):
        assert grades[student]["grades"] == expected(*POINTS), student
        assert grades[student]["score"] == 0


@pytest.mark.slow
def test_autograde_partial_marks_for_typical_mistakes(grades):
    """Each mistake loses exactly the points of the tests it breaks."""
    assert grades["pads_to_max_length"]["grades"] == expected("test_tokenize")
    assert grades["pads_to_max_length"]["score"] == 8
    # Averaging over padding breaks pooling and, through it, the embeddings of a padded batch.
    assert grades["mean_over_padding"]["grades"] == expected("test_mean_pool_padding", "test_embed")
    assert grades["mean_over_padding"]["score"] == 6
    # A dot product is only right for vectors of length 1: the hidden search test uses raw vectors.
    assert grades["dot_product"]["grades"] == expected("test_cosine", "test_search")
    assert grades["dot_product"]["score"] == 7
    assert grades["worst_first"]["grades"] == expected("test_search")
    assert grades["worst_first"]["score"] == 8
