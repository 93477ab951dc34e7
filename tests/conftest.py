"""Shared pytest setup: keep every test offline and away from ~/.cache.

huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, when it is first
imported, so they are set here at import time of the conftest, before any
test module can import transformers.
"""

import os
import tempfile

import pytest

os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="course-test-hf-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# Lesson 05 saves its trained decoder to course.generate.default_decoder_dir(): keep tests out of ~/.cache.
os.environ.setdefault("COURSE_DECODER_DIR", os.path.join(tempfile.mkdtemp(prefix="course-test-decoder-"), "decoder"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module: tiny models run faster so, and on a shared CPU threads wait for each other.

    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
