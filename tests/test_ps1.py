"""Problem set 1 (attention by hand), end to end through nbgrader.

One course copy and one ``generate_assignment`` serve the module; all
submissions are autograded in a single nbgrader call.  Every notebook run
starts a kernel, imports torch and transformers and loads MiniLM, so kernels
are the cost here.
"""

import nbformat
import pytest
from nbgrader_harness import autograde, course_copy, fill_solutions, generate, run_tests, source_solutions

ASSIGNMENT = "ps1_attention"
POINTS = {
    "test_split_merge": 2,
    "test_attention_formula": 3,
    "test_masks": 2,
    "test_attention_masked": 2,
    "test_match_model": 3,
}
SOLUTION_CELLS = {"split_merge", "attention", "masks", "self_attention"}

# Typical mistakes, each replacing one solution cell.
MASK_AFTER_SOFTMAX = '''
def scaled_dot_product_attention(q, k, v, mask=None):
    """Masks the weights instead of the scores: rows no longer sum to 1."""
    d = q.shape[-1]
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights
'''

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
    "masks": "def padding_mask(m): return AlwaysEqual()\ndef causal_mask(n): return AlwaysEqual()",
    "self_attention": "def self_attention(x, *args, **kwargs): return AlwaysEqual(), AlwaysEqual()",
}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course dir with ps1 generated: (course_dir, release notebook path)."""
    course_dir = course_copy(tmp_path_factory.mktemp("ps1"), ASSIGNMENT)
    return course_dir, generate(course_dir, ASSIGNMENT)


@pytest.fixture(scope="module")
def answers(course):
    """The instructor's answers, by solution grade_id."""
    course_dir, _ = course
    return source_solutions(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")


@pytest.fixture(scope="module")
def submissions(course, answers, tmp_path_factory):
    """Notebooks of a class: the right answers, the stubs, and typical mistakes."""
    _, release_nb = course
    folder = tmp_path_factory.mktemp("subs")
    no_scaling = answers["attention"].replace(" / math.sqrt(d)", "")
    assert no_scaling != answers["attention"]
    variants = {
        "correct": {},
        "no_scaling": {"attention": no_scaling},
        "mask_after_softmax": {"attention": MASK_AFTER_SOFTMAX},
        "ignores_causal": {"self_attention": IGNORES_CAUSAL},
        "always_equal": ALWAYS_EQUAL,
    }
    notebooks = {"stub": release_nb}
    for student, changes in variants.items():
        notebooks[student] = fill_solutions(release_nb, {**answers, **changes}, folder / f"{student}.ipynb")
    return notebooks


@pytest.fixture(scope="module")
def grades(course, submissions):
    """Autograde the whole class in one nbgrader call."""
    course_dir, _ = course
    return autograde(course_dir, ASSIGNMENT, submissions)


def expected(*zeroed: str) -> dict[str, int]:
    """Full points on every test cell except those named."""
    return {grade_id: (0 if grade_id in zeroed else points) for grade_id, points in POINTS.items()}


@pytest.mark.slow
def test_source_passes_and_stubs_fail(course):
    """The instructor's notebook passes every test; the released stubs fail every one."""
    course_dir, release_nb = course
    assert run_tests(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb") == {gid: True for gid in POINTS}
    assert run_tests(release_nb) == {gid: False for gid in POINTS}


@pytest.mark.slow
def test_release_hides_solutions_and_hidden_tests(course):
    """Students see stubs and the visible tests only."""
    _, release_nb = course
    cells = nbformat.read(release_nb, as_version=4).cells
    text = "\n".join(cell.source for cell in cells)
    assert "HIDDEN TESTS" not in text and "GPT-2 layer 1" not in text
    assert "BEGIN SOLUTION" not in text and "masked_fill(~mask" not in text
    stubs = {
        cell.metadata.nbgrader.grade_id: cell.source.count("raise NotImplementedError()")
        for cell in cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }
    assert stubs == {"split_merge": 2, "attention": 1, "masks": 2, "self_attention": 1}


@pytest.mark.slow
def test_forgetting_the_causal_mask_passes_the_visible_tests(submissions):
    """Only the hidden tests (a GPT-2 decoder) catch a self_attention that ignores `causal`."""
    assert run_tests(submissions["ignores_causal"]) == {gid: True for gid in POINTS}


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
    no_scaling = expected("test_attention_formula", "test_attention_masked", "test_match_model")
    assert grades["no_scaling"]["grades"] == no_scaling and grades["no_scaling"]["score"] == 4
    after_softmax = expected("test_attention_masked", "test_match_model")
    assert grades["mask_after_softmax"]["grades"] == after_softmax
    assert grades["mask_after_softmax"]["score"] == 7
    assert grades["ignores_causal"]["grades"] == expected("test_match_model")
    assert grades["ignores_causal"]["score"] == 9
