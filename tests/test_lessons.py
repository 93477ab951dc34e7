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
        cwd=REPO,
        capture_output=True,
        text=True,
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
    # stdout is the table alone: no kernel (or its libraries) writes around it
    assert smoke["_cli"]["stdout"].startswith("notebook "), smoke["_cli"]["stdout"][:300]


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


#: A code cell that draws: it must leave at least one image in the executed notebook.
DRAWS = r"\bplt\.(show|subplots|figure|plot)\b|\bplot_\w+\(|\.imshow\("


@pytest.mark.parametrize("lesson", LESSONS)
def test_executed_lesson_holds_its_figures(smoke, lesson):
    """MPLBACKEND=Agg is in this environment (tests/conftest.py, as in CI), yet every drawing cell keeps its image.

    Under Agg a kernel draws nowhere and the executed copy holds no figure;
    `course run` starts kernels with the inline backend whatever the environment.
    """
    import os
    import re

    import nbformat

    assert os.environ.get("MPLBACKEND") == "Agg"
    source = nbformat.read(REPO / "notebooks" / f"{lesson}.ipynb", as_version=4)
    executed = {cell.source: cell for cell in nbformat.read(smoke[lesson]["output"], as_version=4).cells}
    drawing = [cell.source for cell in source.cells if cell.cell_type == "code" and re.search(DRAWS, cell.source)]
    missing = [
        text.splitlines()[0]
        for text in drawing
        if not any("image/png" in output.get("data", {}) for output in executed[text].get("outputs", []))
    ]
    assert not missing, f"{lesson}: cells that draw but left no image: {missing}"


def test_record_leaves_no_metric_lines_for_the_student(smoke):
    """record() is silent: no "metric ... = ..." text in any executed lesson, yet the summary has the metrics."""
    import nbformat

    for lesson in LESSONS:
        nb = nbformat.read(smoke[lesson]["output"], as_version=4)
        texts = [
            output.get("text", "") + output.get("data", {}).get("text/plain", "")
            for cell in nb.cells
            for output in cell.get("outputs", [])
        ]
        assert not [t for t in texts if t.startswith("metric ")], lesson
        assert smoke[lesson]["metrics"], f"{lesson} recorded no metrics"


def test_attention_lesson_recomputes_the_whole_block_and_measures_sqrt_d(smoke):
    metrics = smoke["01_attention"]["metrics"]
    assert metrics["attention_block_max_error"] <= 1e-4
    assert abs(metrics["sqrt_d_scaled_variance_d1024"] - 1) < 0.15


def _outputs_text(path) -> str:
    """Every text a student sees in an executed notebook: streams, plain-text results, errors."""
    import nbformat

    texts = []
    for cell in nbformat.read(path, as_version=4).cells:
        outputs = cell.get("outputs", [])
        # One print can arrive as several stream outputs (flushed mid-line): join them as the page shows them.
        texts.append("".join(output.get("text", "") for output in outputs if output.get("output_type") == "stream"))
        for output in outputs:
            texts.append(output.get("data", {}).get("text/plain", ""))
            texts.append(output.get("data", {}).get("text/markdown", ""))
            texts.extend(output.get("traceback", []))
    return "\n".join(texts)


@pytest.mark.parametrize("lesson", ["02_pipelines", "03_finetuning"])
def test_expected_library_messages_stay_out_of_what_a_student_sees(smoke, lesson):
    """No LOAD REPORT box for the fresh head (explained in prose), no cache warning, no raw enum reprs."""
    seen = _outputs_text(smoke[lesson]["output"])
    assert "LOAD REPORT" not in seen
    assert "incompatible with gradient checkpointing" not in seen
    assert "<OptimizerNames." not in seen and "<IntervalStrategy." not in seen
    assert "new, untrained parameters: classifier.bias, classifier.weight" in seen


def test_finetuning_lesson_splits_memory_and_compares_recipes_fairly(smoke):
    metrics = smoke["03_finetuning"]["metrics"]
    assert 255 < metrics["fixed_training_memory_mb"] < 265  # 22.7 M parameters x 12 bytes, in MiB
    assert 0.3 < metrics["loop_vs_trainer_ratio"] < 3  # the same steps each: no 0.45x artefact of 120 vs 20 steps
    seen = _outputs_text(smoke["03_finetuning"]["output"])
    assert "our loop / Trainer" in seen and "fixed (MiB) | grows (MiB)" in seen
    assert "torchrun --nproc_per_node" in seen and "--device" in seen  # a launch this machine can run


def test_pipelines_lesson_repeats_the_sweep_and_shows_the_pooler(smoke):
    seen = _outputs_text(smoke["02_pipelines"]["output"])
    assert "largest difference, logits by hand vs the model" in seen
    assert seen.count("(runs ") >= 3  # every sweep point shows the spread of its repeats
    assert "padding" in seen


@pytest.mark.parametrize("lesson", ["02_pipelines", "03_finetuning"])
def test_printed_lines_fit_a_notebook_without_wrapping(smoke, lesson):
    """JupyterLab breaks long output lines anywhere, mid-word included: keep what the lessons print short."""
    import nbformat

    long = []
    for cell in nbformat.read(smoke[lesson]["output"], as_version=4).cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                long += [line for line in output["text"].splitlines() if len(line) > 115]
    assert not long, f"{len(long)} printed line(s) over 115 characters, e.g. {long[0]!r}"


def test_extending_lesson_lora_reaches_085_with_at_most_2_percent_trainable(smoke):
    metrics = smoke["04_extending"]["metrics"]
    assert metrics["lora_test_accuracy"] >= 0.85
    assert metrics["lora_trainable_fraction"] <= 0.02
    for name in ("adapter_test_accuracy", "full_test_accuracy", "head_only_test_accuracy"):
        assert 0.5 <= metrics[name] <= 1.0, name


def test_extending_lesson_hand_lora_matches_peft_and_merges_exactly(smoke):
    metrics = smoke["04_extending"]["metrics"]
    assert metrics["peft_max_abs_diff"] <= 1e-6
    assert metrics["peft_same_trainable_count"] is True
    assert metrics["merge_max_abs_diff"] <= 1e-5


def test_extending_lesson_starts_as_the_identity_and_the_adapter_reloads(smoke):
    metrics = smoke["04_extending"]["metrics"]
    assert metrics["temperature_identity_max_diff"] <= 1e-6
    assert metrics["adapter_identity_max_diff"] <= 1e-6
    assert metrics["temperature_spread"] > 0
    assert metrics["adapter_file_kb"] < 1024
    assert abs(metrics["reloaded_adapter_test_accuracy"] - metrics["lora_test_accuracy"]) <= 0.01  # merged: rounding


def test_serving_lesson_batching_raises_throughput(smoke):
    metrics = smoke["06_serving"]["metrics"]
    assert metrics["serve_batching_speedup"] >= 1.5  # dynamic batching vs --max-batch 1, same run
    assert metrics["serve_p95_ms"] > 0
