"""Devices, metrics, throughput and the CLI's promises (fast help, no torch on import)."""

import json
import subprocess
import sys

import nbformat
import pytest

from course.devices import choose_device
from course.errors import CourseError
from course.metrics import METRIC_MIME, _plain, metrics_from_notebook
from course.throughput import matmul_flops, matmul_tflops


def test_import_course_and_cli_parser_load_no_torch():
    code = "import sys, course, course.cli, course.assets, course.run, course.doctor; course.cli.build_parser(); "
    heavy = "('torch', 'transformers', 'papermill', 'nbgrader')"
    code += f"print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "course", "--help"], capture_output=True, text=True, check=True)
    for command in ("doctor", "assets", "run", "grade"):
        assert command in out.stdout


def test_auto_device_on_a_cpu_machine_says_why(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    choice = choose_device()
    assert choice.device == torch.device("cpu") and "no GPU" in choice.reason


def test_missing_gpu_index_falls_back_with_the_ordinal_reason(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    choice = choose_device("cuda:3")
    assert choice.device == torch.device("cpu") and "invalid device ordinal" in choice.reason
    assert choose_device("cuda:1").device == torch.device("cuda:1")
    assert choose_device("cuda").device == torch.device("cuda:0")
    with pytest.raises(CourseError, match="not usable"):
        choose_device("cuda:3", strict=True)


def test_unknown_device_string_is_an_error():
    with pytest.raises(CourseError, match="unknown device 'gpu0'"):
        choose_device("gpu0")


def test_metric_values_become_plain_json():
    import torch

    assert _plain(torch.tensor(0.5)) == 0.5 and isinstance(_plain(torch.tensor(0.5)), float)
    assert _plain(3) == 3 and _plain("cpu") == "cpu" and _plain(float("nan")) == "nan"
    with pytest.raises(TypeError):
        _plain([1, 2])


def test_metrics_are_read_back_from_outputs_last_wins():
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={METRIC_MIME: {"name": "acc", "value": 0.5}}),
        nbformat.v4.new_output("display_data", data={METRIC_MIME: {"name": "acc", "value": 0.9}}),
        nbformat.v4.new_output("stream", text="noise"),
    ]
    assert metrics_from_notebook(nbformat.v4.new_notebook(cells=[cell])) == {"acc": 0.9}


def test_matmul_flops_and_a_real_measurement():
    assert matmul_flops(10) == 2000
    assert 0 < matmul_tflops(64, "cpu", repeats=1) < 1000


def test_bad_matmul_arguments():
    with pytest.raises(CourseError, match="unknown dtype"):
        matmul_tflops(8, dtype="float12")
    with pytest.raises(CourseError, match="must be positive"):
        matmul_tflops(0)


def test_record_is_silent_for_the_student_but_readable_by_the_runner(monkeypatch):
    """record() shows nothing a frontend can render (no "metric ... = ..." lines); course run still reads it."""
    import IPython.display

    from course.metrics import record

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.append((objs, kw)))
    record("test_accuracy", 0.91, "")
    record("latency", 12.5, "ms")
    bundles = [objs[0] for objs, kw in shown]
    assert all(kw.get("raw") for objs, kw in shown)
    assert [set(bundle) for bundle in bundles] == [{METRIC_MIME}, {METRIC_MIME}]  # no text/plain, no html
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("display_data", data=bundle) for bundle in bundles]
    assert metrics_from_notebook(nbformat.v4.new_notebook(cells=[cell])) == {"test_accuracy": 0.91, "latency": 12.5}


def test_matmul_sweep_reports_median_and_spread_and_plots_it():
    from matplotlib.collections import PolyCollection

    from course.throughput import matmul_samples, matmul_sweep, plot_sweep

    samples = matmul_samples(32, "cpu", repeats=4, warmup=1)
    assert len(samples) == 4 and all(s > 0 for s in samples)
    rows = matmul_sweep([16, 32], ["cpu"], repeats=3)
    assert [row["n"] for row in rows] == [16, 32]
    for row in rows:
        assert row["repeats"] == 3
        assert 0 < row["tflops_min"] <= row["tflops"] <= row["tflops_max"]
    fig = plot_sweep(rows)
    ax = fig.axes[0]
    assert [line.get_ydata().tolist() for line in ax.lines] == [[row["tflops"] for row in rows]]
    assert any(isinstance(c, PolyCollection) for c in ax.collections), "the min-max spread is not drawn"
    import matplotlib.pyplot as plt

    plt.close(fig)
