"""Lesson 04's promises, read from one smoke run of the notebook (`course run 04_extending`).

The integrator may fold these assertions into ``tests/test_lessons.py``'s
shared smoke run, to run the notebook once instead of twice in CI.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lesson04")
    done = subprocess.run(
        [sys.executable, "-m", "course", "run", "04_extending", "--profile", "smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())["notebooks"][0]


def test_lora_reaches_085_with_at_most_2_percent_trainable(run):
    metrics = run["metrics"]
    assert metrics["lora_test_accuracy"] >= 0.85
    assert metrics["lora_trainable_fraction"] <= 0.02
    for name in ("adapter_test_accuracy", "full_test_accuracy", "head_only_test_accuracy"):
        assert 0.5 <= metrics[name] <= 1.0, name


def test_hand_lora_matches_peft_and_merges_exactly(run):
    metrics = run["metrics"]
    assert metrics["peft_max_abs_diff"] <= 1e-6
    assert metrics["peft_same_trainable_count"] is True
    assert metrics["merge_max_abs_diff"] <= 1e-5


def test_extensions_start_as_the_identity_and_the_adapter_reloads(run):
    metrics = run["metrics"]
    assert metrics["temperature_identity_max_diff"] <= 1e-6
    assert metrics["adapter_identity_max_diff"] <= 1e-6
    assert metrics["temperature_spread"] > 0
    assert metrics["adapter_file_kb"] < 1024
    assert abs(metrics["reloaded_adapter_test_accuracy"] - metrics["lora_test_accuracy"]) <= 0.01  # merged: rounding


def test_unsolved_exercises_report_not_yet(run):
    import nbformat

    from course.checks import checks_from_notebook

    verdicts = checks_from_notebook(nbformat.read(run["output"], as_version=4))
    assert set(verdicts) == {"lora_forward", "count_trainable"} and not any(verdicts.values())
