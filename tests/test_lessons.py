"""The smoke run of every lesson, exactly as `course run --profile smoke` does it.

One run of all notebooks is shared by the assertions below (it takes minutes);
each assertion is a promise a lesson makes to students and CI.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
LESSONS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PEAK_RSS_GOAL_MB = 2048

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run the real CLI once over all lessons; return the summary by notebook name."""
    out = tmp_path_factory.mktemp("smoke")
    result = subprocess.run(
        [sys.executable, "-m", "course", "run", "--profile", "smoke", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True,
    )
    summary = json.loads((out / "summary.json").read_text())
    by_name = {entry["name"]: entry for entry in summary["notebooks"]}
    by_name["_cli"] = {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr[-4000:]}
    return by_name


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_passes_the_smoke_run(smoke, lesson):
    entry = smoke[lesson]
    assert entry["status"] == "ok", entry.get("error")
    assert Path(entry["output"]).exists()


@pytest.mark.parametrize("lesson", LESSONS)
def test_unsolved_exercises_report_not_yet(smoke, lesson):
    """Run all succeeded above with the exercises unsolved; none of their checks may pass."""
    import nbformat

    from course.checks import checks_from_notebook

    verdicts = checks_from_notebook(nbformat.read(smoke[lesson]["output"], as_version=4))
    assert len(verdicts) >= 2, f"{lesson}: only {len(verdicts)} check(s) reported"
    assert not any(verdicts.values()), f"{lesson}: checks pass without an answer: {verdicts}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_kernel_stays_under_2_gib(smoke, lesson):
    assert 0 < smoke[lesson]["peak_rss_mb"] <= PEAK_RSS_GOAL_MB


def test_cli_exit_code_and_table(smoke):
    assert smoke["_cli"]["returncode"] == 0, smoke["_cli"]["stderr"]
    assert "all notebooks passed" in smoke["_cli"]["stdout"]
    assert "summary.json" in smoke["_cli"]["stdout"]


def test_environment_lesson_records_live_facts(smoke):
    metrics = smoke["00_environment"]["metrics"]
    assert metrics["device"] == "cpu"
    assert metrics["matmul_tflops_cpu_float32"] > 0
    assert metrics["pipeline_hidden_size"] == 384
    assert metrics["doctor_errors"] == 0


def test_pipelines_lesson_matches_the_pipeline_by_hand(smoke):
    metrics = smoke["02_pipelines"]["metrics"]
    assert metrics["anatomy_max_difference_features"] < 1e-4
    assert metrics["anatomy_max_difference_classification"] < 1e-4
    assert metrics["zero_shot_accuracy"] >= 0.65


def test_finetuning_lesson_reaches_085_on_the_test_split(smoke):
    metrics = smoke["03_finetuning"]["metrics"]
    assert metrics["test_accuracy"] >= 0.85 > metrics["test_accuracy_before"]


def test_attention_lesson_recomputes_exactly(smoke):
    metrics = smoke["01_attention"]["metrics"]
    assert metrics["recompute_max_error_encoder"] <= 1e-5
    assert metrics["recompute_max_error_decoder"] <= 1e-5


def test_generation_lesson_beats_unigram_and_matches_generate(smoke):
    metrics = smoke["05_generation"]["metrics"]
    assert metrics["decoder_val_perplexity"] < metrics["unigram_perplexity"] < metrics["untrained_perplexity"]
    assert metrics["decoding_matches_generate"] == 4  # greedy, beam search and two seeded samplings
    assert metrics["kv_cache_speedup"] > 1.5  # the >= 3x goal is bench/bench_generate.py's, on a quiet CPU
