"""Problem set 0 (environment) and the nbgrader course config, end to end.

One course copy and one ``generate_assignment`` serve the whole module; all
submissions are autograded in a single nbgrader call.  Each notebook run
starts a kernel and imports torch, so kernels are the cost here.
"""

import re

import nbformat
import pytest
from nbgrader_harness import (
    GRADING,
    autograde,
    course_copy,
    fill_solutions,
    generate,
    harmless_stderr_pattern,
    run_tests,
    source_solutions,
)
from traitlets.config.loader import PyFileConfigLoader

ASSIGNMENT = "ps0_environment"
POINTS = {
    "test_pick_device_auto": 2,
    "test_pick_device_request": 2,
    "test_matmul_tflops": 2,
    "test_parse_gpu_line": 2,
}

# The warning torch prints when it probes a broken CUDA driver, as a correct
# answer may trigger it: nbgrader would score the test cell 0 without the
# course's IgnorePattern.
TORCH_CUDA_WARNING = (
    "/opt/conda/lib/python3.11/site-packages/torch/cuda/__init__.py:182: UserWarning: "
    "CUDA initialization: CUDA driver initialization failed, you might not have a CUDA gpu. "
    "(Triggered internally at /pytorch/c10/cuda/CUDAFunctions.cpp:109.)\n"
    "  return torch._C._cuda_getDeviceCount() > 0\n"
)

ASSUMES_A_GPU = '''
def pick_device(prefer=None):
    """Everyone has a GPU, right?"""
    if prefer is None or prefer == "auto":
        return torch.device("cuda")
    return torch.device(prefer)
'''

NO_FACTOR_TWO = '''
def matmul_tflops(n, seconds):
    """Counts a multiply-add as one operation."""
    if n < 1 or seconds <= 0:
        raise ValueError("n must be >= 1 and seconds > 0")
    return n**3 / seconds / 1e12
'''


def _warning_before(answer, name, message, category, filename):
    """Wrap the function ``name`` defined by ``answer`` so it warns on each call."""
    return answer + f"""

_{name}_quiet = {name}
def {name}(*args):
    warnings.warn_explicit({message!r}, {category}, {filename!r}, 182)
    return _{name}_quiet(*args)
"""


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course dir with ps0 generated: (course_dir, release notebook path)."""
    course_dir = course_copy(tmp_path_factory.mktemp("ps0"), ASSIGNMENT)
    return course_dir, generate(course_dir, ASSIGNMENT)


@pytest.fixture(scope="module")
def answers(course):
    """The instructor's answers, by solution grade_id."""
    course_dir, _ = course
    return source_solutions(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")


@pytest.fixture(scope="module")
def off_by_one(course, answers, tmp_path_factory):
    """A submission accepting cuda:N when N == device_count(): visible tests pass."""
    _, release_nb = course
    solution = answers["pick_device"]
    assert "device.index >= count" in solution
    wrong = solution.replace("device.index >= count", "device.index > count")
    out = tmp_path_factory.mktemp("sub") / "off_by_one.ipynb"
    return fill_solutions(release_nb, {**answers, "pick_device": wrong}, out)


@pytest.fixture(scope="module")
def grades(course, answers, off_by_one, tmp_path_factory):
    """Autograde a class of typical submissions in one nbgrader call."""
    course_dir, release_nb = course
    subs = tmp_path_factory.mktemp("subs")
    torch_file = "/opt/conda/lib/python3.11/site-packages/torch/cuda/__init__.py"
    variants = {
        "correct": {},
        "assumes_gpu": {"pick_device": ASSUMES_A_GPU},
        "no_factor_two": {"matmul_tflops": NO_FACTOR_TWO},
        # Right answers; torch's CUDA-init warning reaches stderr in the tflops
        # test cell, a genuine RuntimeWarning in the nvidia-smi test cell.
        "noisy": {
            "matmul_tflops": _warning_before(
                answers["matmul_tflops"], "matmul_tflops",
                "CUDA initialization: CUDA driver initialization failed, you might not have a CUDA gpu.",
                "UserWarning", torch_file),
            "parse_gpu_line": _warning_before(
                answers["parse_gpu_line"], "parse_gpu_line",
                "invalid value encountered in cast", "RuntimeWarning", "/home/student/ps0.py"),
        },
    }
    submissions = {"stub": release_nb, "off_by_one": off_by_one}
    for student, changes in variants.items():
        submissions[student] = fill_solutions(
            release_nb, {**answers, **changes}, subs / f"{student}.ipynb")
    return autograde(course_dir, ASSIGNMENT, submissions)


def _expected(*zeroed):
    """Full points on every test cell except those named."""
    return {gid: (0 if gid in zeroed else pts) for gid, pts in POINTS.items()}


def test_config_root_follows_the_file(tmp_path):
    """A copied config makes its own folder the course root, with course id 'course'."""
    course_dir = course_copy(tmp_path, ASSIGNMENT)
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
    assert cfg.CourseDirectory.root == str(course_dir)
    assert cfg.CourseDirectory.course_id == "course"
    assert cfg.Execute.timeout >= 120
    assert cfg.ClearSolutions.code_stub["python"] == "# YOUR CODE HERE\nraise NotImplementedError()"


@pytest.mark.parametrize(
    ("stderr", "dropped"),
    [
        (TORCH_CUDA_WARNING, True),
        ("Map: 100%|██████████| 40/40 [00:00<00:00, 2112.31 examples/s]\n", True),
        ("`torch_dtype` is deprecated! Use `dtype` instead!\n", True),
        (
            "BertForSequenceClassification LOAD REPORT from: /models/minilm\n"
            "Key               | Status  | \n"
            "------------------+---------+-\n"
            "classifier.weight | MISSING | \n\n"
            "Notes:\n- MISSING:\tthose params were newly initialized because missing "
            "from the checkpoint. Consider training on your downstream task.\n",
            True,
        ),
        ("my debug message\n", False),
        (TORCH_CUDA_WARNING + "/home/s/ps.py:3: RuntimeWarning: divide by zero\n  x = 1 / y\n", False),
        ("Map: 100%|█| 4/4\nTraceback (most recent call last):\n", False),
    ],
    ids=["torch-cuda-init", "tqdm", "torch_dtype", "load-report", "student-print",
         "harmless-plus-real", "tqdm-plus-traceback"],
)
def test_ignore_pattern_drops_only_harmless_stderr(stderr, dropped):
    """IgnorePattern drops an output only when ALL of it is known-harmless noise."""
    pattern = harmless_stderr_pattern(GRADING / "nbgrader_config.py")
    assert bool(re.search(pattern, stderr)) is dropped


@pytest.mark.slow
def test_source_passes_and_stubs_fail(course):
    """The instructor's notebook passes every test; the released stubs fail every one."""
    course_dir, release_nb = course
    source = run_tests(course_dir / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    assert source == {gid: True for gid in POINTS}
    assert run_tests(release_nb) == {gid: False for gid in POINTS}


@pytest.mark.slow
def test_release_hides_hidden_tests_and_solutions(course):
    """Students see stubs and visible tests only."""
    _, release_nb = course
    cells = nbformat.read(release_nb, as_version=4).cells
    text = "\n".join(c.source for c in cells)
    assert "HIDDEN TESTS" not in text and "cuda:2" not in text
    assert "BEGIN SOLUTION" not in text and "device.index >= count" not in text
    stubs = {
        c.metadata.nbgrader.grade_id: c.source.endswith("# YOUR CODE HERE\n    raise NotImplementedError()")
        for c in cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }
    assert stubs == {"pick_device": True, "matmul_tflops": True, "parse_gpu_line": True}


@pytest.mark.slow
def test_off_by_one_passes_visible_tests(off_by_one):
    """The released (visible) tests do not catch cuda:N with N == device_count()."""
    assert run_tests(off_by_one) == {gid: True for gid in POINTS}


@pytest.mark.slow
def test_autograde_full_marks_for_correct_answer(grades):
    """The instructor's answers, submitted by a student, get 8/8."""
    assert grades["correct"]["grades"] == _expected()
    assert grades["correct"]["score"] == grades["correct"]["max_score"] == sum(POINTS.values())


@pytest.mark.slow
def test_autograde_zero_for_untouched_stubs(grades):
    """Submitting the released notebook unchanged scores nothing."""
    assert grades["stub"]["grades"] == _expected(*POINTS)
    assert grades["stub"]["score"] == 0


@pytest.mark.slow
def test_autograde_partial_marks_for_typical_mistakes(grades):
    """Each mistake loses exactly the points of the tests about it."""
    assert grades["assumes_gpu"]["grades"] == _expected(
        "test_pick_device_auto", "test_pick_device_request")
    assert grades["assumes_gpu"]["score"] == 4
    assert grades["no_factor_two"]["grades"] == _expected("test_matmul_tflops")
    assert grades["no_factor_two"]["score"] == 6


@pytest.mark.slow
def test_autograde_hidden_test_catches_off_by_one(grades):
    """The hidden tests catch what the visible ones let through."""
    assert grades["off_by_one"]["grades"] == _expected("test_pick_device_request")


@pytest.mark.slow
def test_autograde_ignores_harmless_torch_warning_only(grades):
    """A torch CUDA-init warning in a test cell costs nothing; a real warning still does."""
    assert grades["noisy"]["grades"] == _expected("test_parse_gpu_line")
