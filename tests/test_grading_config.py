"""The nbgrader course config (grading/nbgrader_config.py), as plain nbgrader uses it.

``course grade`` scores only errors; plain ``nbgrader autograde`` (which the
config also serves) scores any stderr in a test cell as 0, so the config's
IgnorePattern must drop known-harmless torch noise and nothing else.
"""

import re

import pytest
from assignments.ps0_environment import ASSIGNMENT, NOISY_ANSWERS
from nbgrader_harness import (
    GRADING,
    autograde,
    course_copy,
    fill_solutions,
    generate,
    harmless_stderr_pattern,
    source_notebook,
    source_solutions,
)
from traitlets.config.loader import PyFileConfigLoader

# The warning torch prints when it probes a broken CUDA driver, as a correct
# answer may trigger it: nbgrader would score the test cell 0 without the
# course's IgnorePattern.
TORCH_CUDA_WARNING = (
    "/opt/conda/lib/python3.11/site-packages/torch/cuda/__init__.py:182: UserWarning: "
    "CUDA initialization: CUDA driver initialization failed, you might not have a CUDA gpu. "
    "(Triggered internally at /pytorch/c10/cuda/CUDAFunctions.cpp:109.)\n"
    "  return torch._C._cuda_getDeviceCount() > 0\n"
)


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
    ids=[
        "torch-cuda-init",
        "tqdm",
        "torch_dtype",
        "load-report",
        "student-print",
        "harmless-plus-real",
        "tqdm-plus-traceback",
    ],
)
def test_ignore_pattern_drops_only_harmless_stderr(stderr, dropped):
    """IgnorePattern drops an output only when ALL of it is known-harmless noise."""
    pattern = harmless_stderr_pattern(GRADING / "nbgrader_config.py")
    assert bool(re.search(pattern, stderr)) is dropped


@pytest.mark.slow
def test_plain_nbgrader_ignores_the_harmless_torch_warning_only(tmp_path):
    """Under plain ``nbgrader autograde``: torch's CUDA-init warning costs nothing, a real warning still does."""
    course_dir = course_copy(tmp_path, ASSIGNMENT)
    release_nb = generate(course_dir, ASSIGNMENT)
    answers = source_solutions(source_notebook(ASSIGNMENT, course_dir))
    # The right answers of ps0, each warning as it runs (the case file's "warnings_on_stderr", which
    # `course grade` gives full marks): torch's harmless CUDA-init warning, then a real RuntimeWarning.
    notebook = fill_solutions(release_nb, {**answers, **NOISY_ANSWERS}, tmp_path / "noisy.ipynb")
    grades = autograde(course_dir, ASSIGNMENT, {"noisy": notebook})["noisy"]["grades"]
    assert grades["test_matmul_tflops"] == 2
    assert grades["test_parse_gpu_line"] == 0
    assert sum(grades.values()) == grades["test_parse_gpu_line"] + 8
