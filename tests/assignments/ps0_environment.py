"""ps0_environment: devices, TFLOP/s, nvidia-smi, driver/CUDA compatibility (cases for tests/test_assignments.py)."""

from nbgrader_harness import course_shortcuts, mistake, source_notebook, source_solutions

ASSIGNMENT = "ps0_environment"
POINTS = {
    "test_pick_device_auto": 2,
    "test_pick_device_request": 2,
    "test_matmul_tflops": 2,
    "test_parse_gpu_line": 2,
    "test_cuda_native": 1,
    "test_cuda_compatible": 1,
}

_ANSWERS = source_solutions(source_notebook(ASSIGNMENT))

ASSUMES_A_GPU = '''
def pick_device(prefer=None):
    """Everyone has a GPU, right?"""
    if prefer is None or prefer == "auto":
        return torch.device("cuda")
    return torch.device(prefer)
'''

#: Counts a multiply-add as one operation.
NO_FACTOR_TWO = mistake(ASSIGNMENT, "matmul_tflops", ("2 * n**3", "n**3"))

#: Accepts cuda:N when N == device_count(): the visible tests do not try it, the hidden ones do.
OFF_BY_ONE = mistake(ASSIGNMENT, "pick_device", ("device.index >= count", "device.index > count"))

STRING_COMPARE = '''
def cuda_support(driver, cuda):
    """Compares versions as strings: "570.124.06" < "570.26" because "1" < "2"."""
    if cuda not in CUDA_NATIVE_DRIVER or not driver or not driver.replace(".", "").isdigit():
        raise ValueError(f"bad versions {driver!r}, {cuda!r}")
    if driver >= CUDA_NATIVE_DRIVER[cuda]:
        return "native"
    if driver >= CUDA_COMPAT_DRIVER[int(cuda.split(".")[0])]:
        return "compatible"
    return "unsupported"
'''

NO_MINOR_VERSION_COMPATIBILITY = mistake(ASSIGNMENT, "cuda_support", ('return "compatible"', 'return "unsupported"'))

# Right answers that write to stderr: torch's CUDA-init warning in the TFLOP/s test
# and a real RuntimeWarning in the nvidia-smi test.  `course grade` scores only
# errors (a warning never zeroes a correct answer); plain nbgrader's behaviour
# with the course's IgnorePattern is tested in tests/test_grading_config.py, on
# these same NOISY_ANSWERS.
TORCH_FILE = "/opt/conda/lib/python3.11/site-packages/torch/cuda/__init__.py"


def warning_before(answer: str, name: str, message: str, category: str, filename: str) -> str:
    """Wrap the function ``name`` defined by ``answer`` so that it warns on each call."""
    return (
        answer
        + f"""

_{name}_quiet = {name}
def {name}(*args):
    warnings.warn_explicit({message!r}, {category}, {filename!r}, 182)
    return _{name}_quiet(*args)
"""
    )


#: The right answers, each warning on stderr as it runs: torch's harmless CUDA-init warning, a real RuntimeWarning.
NOISY_ANSWERS = {
    "matmul_tflops": warning_before(
        _ANSWERS["matmul_tflops"],
        "matmul_tflops",
        "CUDA initialization: CUDA driver initialization failed, you might not have a CUDA gpu.",
        "UserWarning",
        TORCH_FILE,
    ),
    "parse_gpu_line": warning_before(
        _ANSWERS["parse_gpu_line"],
        "parse_gpu_line",
        "invalid value encountered in cast",
        "RuntimeWarning",
        "/home/student/ps0.py",
    ),
}

MISTAKES = {
    "assumes_gpu": ({"pick_device": ASSUMES_A_GPU}, {"test_pick_device_auto": 0, "test_pick_device_request": 0}),
    "off_by_one": ({"pick_device": OFF_BY_ONE}, {"test_pick_device_request": 0}),
    "no_factor_two": ({"matmul_tflops": NO_FACTOR_TWO}, {"test_matmul_tflops": 0}),
    "string_compare": ({"cuda_support": STRING_COMPARE}, {"test_cuda_native": 0}),
    "no_minor_version_compatibility": ({"cuda_support": NO_MINOR_VERSION_COMPATIBILITY}, {"test_cuda_compatible": 0}),
    "warnings_on_stderr": (NOISY_ANSWERS, {}),
}

#: Only the hidden tests catch these.
VISIBLE_PASS = ["off_by_one"]

#: The course's own FLOP count (course.throughput), reached by every route.
SHORTCUTS = course_shortcuts(
    "course.throughput",
    ["matmul_flops"],
    "matmul_tflops",
    """
def matmul_tflops(n, seconds):
    if n < 1 or seconds <= 0:
        raise ValueError("n must be >= 1 and seconds > 0")
    return float(lib.matmul_flops(n) / seconds / 1e12)
""",
    {"test_matmul_tflops": 0},
)
