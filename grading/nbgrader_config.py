"""nbgrader configuration for the course (checked against nbgrader 0.9.6).

The course directory is the folder holding this file, wherever it is copied:
``source/<assignment>/`` for the instructor versions, ``release/``,
``submitted/``, ``autograded/``, ``feedback/`` and the SQLite gradebook
``gradebook.db`` are created next to it.  Run nbgrader from this folder with
the course venv's ``bin/`` on PATH (the gradebook is created by ``alembic``).
"""

import os

#: Lines that torch, transformers, tokenizers or tqdm write to stderr while a
#: correct answer runs.  nbgrader scores any stderr in a test cell as 0; the
#: IgnorePattern preprocessor drops a stderr output when ``pattern`` matches.
HARMLESS_STDERR_LINES = [
    # torch probing CUDA where the driver or GPU is missing or too old.
    r".*UserWarning: CUDA initialization: .*",
    r".*UserWarning: Can't initialize NVML.*",
    # transformers deprecation that does not change results.
    r"`torch_dtype` is deprecated! Use `dtype` instead!",
    # tokenizers after a fork (DataLoader workers, Trainer).
    r"huggingface/tokenizers: The current process just got forked.*",
    r"To disable this warning, you can either:",
    # tqdm progress bars (datasets.map, Trainer, downloads from the cache).
    r".*\d+%\|.*",
]

#: transformers 5 "LOAD REPORT" when a head is newly initialised (MISSING) or
#: checkpoint keys are unused (UNEXPECTED): a table, then "Notes:" and bullet
#: lines.  The harmful cases (MISMATCH, CONVERSION) raise an error anyway.
LOAD_REPORT = r".*LOAD REPORT.* from: .*\n(?:.*\n)*?[ \t]*Notes:[ \t]*(?:\n-.*)*"


def harmless_stderr_pattern(lines=HARMLESS_STDERR_LINES, blocks=(LOAD_REPORT,)):
    """Regex matching a stderr text made ONLY of harmless lines and blocks.

    Each harmless line may be followed by indented continuation lines (the
    source line that ``warnings`` prints under a warning).  Anything else in
    the same output, a real warning or a student's message, makes the whole
    pattern fail, so that output is kept and still scores 0.

    Items start at a non-blank character and are matched atomically (the
    lookahead-and-backreference idiom, valid on any Python 3): a long
    non-matching output fails in linear time instead of backtracking
    exponentially, which would hang ``nbgrader autograde``.
    """
    end = r"(?:\n|\Z)"
    line = "(?:" + "|".join(lines) + ")" + end + r"(?:[ \t].*" + end + ")*"
    block = "(?:" + "|".join(blocks) + ")" + end
    item = r"(?=\S)(?:" + block + "|" + line + r")|\n"
    return r"\A(?:(?=(?P<item>" + item + r"))(?P=item))+\Z"


c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

c.CourseDirectory.course_id = os.environ.get("COURSE_ID", "course")
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))

# Solution regions become this stub in the released notebook.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# A test cell may import torch or transformers first thing: 30 s is too short
# on a cold or busy machine.
c.Execute.timeout = 120

# IgnorePattern is already in Autograde.autograde_preprocessors (right after
# Execute) in nbgrader 0.9, but disabled; it needs only switching on.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = harmless_stderr_pattern()
