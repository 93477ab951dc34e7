"""The papermill runner: parameters, summary, failures, timeouts, memory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from course.errors import CourseError
from course.run import find_notebooks, load_profile, parameters_for, run_notebooks

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
REPO = Path(__file__).parents[1]


def course_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run the real `course` command in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "course", *args], cwd=cwd, capture_output=True, text=True)


def test_profiles_file_has_smoke_and_full():
    assert load_profile("smoke")["parameters"]["device"] == "cpu"
    assert "cell_timeout" in load_profile("full")


def test_unknown_profile_is_one_clear_error():
    with pytest.raises(CourseError, match="unknown profile 'turbo'"):
        load_profile("turbo")


def test_parameters_are_filtered_to_what_the_notebook_declares():
    smoke = load_profile("smoke")
    assert parameters_for(FIXTURES / "10_ok.ipynb", smoke) == {"device": "cpu"}
    per_notebook = {"parameters": {"device": "cpu"}, "notebooks": {"10_ok": {"size": 7, "unknown": 1}}}
    assert parameters_for(FIXTURES / "10_ok.ipynb", per_notebook) == {"device": "cpu", "size": 7}


def test_notebook_without_parameters_cell_is_rejected():
    with pytest.raises(CourseError, match="no cell tagged 'parameters'"):
        parameters_for(FIXTURES / "12_noparams.ipynb", load_profile("smoke"))


def test_unknown_notebook_lists_the_available_ones():
    with pytest.raises(CourseError, match="notebook '99_nothing' not found; available: 10_ok"):
        find_notebooks(["99_nothing"], folder=FIXTURES)


def test_lessons_resolve_by_number_and_name():
    assert find_notebooks(["10"], folder=FIXTURES) == [FIXTURES / "10_ok.ipynb"]
    assert find_notebooks(["10_ok"], folder=FIXTURES) == [FIXTURES / "10_ok.ipynb"]


@pytest.mark.slow
def test_run_writes_summary_with_metrics_and_memory(tmp_path):
    summary = run_notebooks([str(FIXTURES / "10_ok.ipynb"), str(FIXTURES / "14_memory.ipynb")], out_dir=tmp_path)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    ok, memory = on_disk["notebooks"]
    assert ok["status"] == "ok" and ok["metrics"] == {"size_squared": 9, "device_used": "cpu"}
    assert ok["seconds"] > 0
    assert (tmp_path / "10_ok.ipynb").exists()
    # the kernel touched 300 MB on top of its own footprint: the watcher must see it
    assert memory["peak_rss_mb"] > ok["peak_rss_mb"] + 200


@pytest.mark.slow
def test_failing_notebook_names_the_cell_and_exits_nonzero(tmp_path):
    result = course_cli("run", str(FIXTURES / "11_fails.ipynb"), str(FIXTURES / "10_ok.ipynb"), "--out", str(tmp_path))
    assert result.returncode == 1
    entry = json.loads((tmp_path / "summary.json").read_text())["notebooks"][0]
    assert entry["status"] == "failed"
    assert "ValueError: boom on purpose" in entry["error"] and "cell 2" in entry["error"]
    assert "FAILED: 11_fails" in result.stdout
    # the other notebook still ran
    assert json.loads((tmp_path / "summary.json").read_text())["notebooks"][1]["status"] == "ok"


@pytest.mark.slow
def test_cell_timeout_fails_the_notebook(tmp_path):
    result = course_cli("run", str(FIXTURES / "13_slow.ipynb"), "--timeout", "1", "--out", str(tmp_path))
    assert result.returncode == 1
    entry = json.loads((tmp_path / "summary.json").read_text())["notebooks"][0]
    assert entry["status"] == "timeout", entry
    assert "timed out" in entry["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "99_nothing"], "notebook '99_nothing' not found"),
        (["run", "--profile", "turbo"], "unknown profile 'turbo'"),
        (["run", "00", "--out", "/proc/forbidden"], "cannot write to output folder /proc/forbidden"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, message):
    result = course_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_figures_survive_mplbackend_agg_and_no_tcp_warning(tmp_path):
    """CI sets MPLBACKEND=Agg (tests/conftest.py does too): the kernel must still draw inline figures.

    A figure left open at the end of a cell is shown by the inline backend only;
    under Agg the executed notebook would hold no image.  The kernel also talks
    over ipc sockets, so ipykernel has no "running over TCP without encryption"
    warning to print.
    """
    import os

    import nbformat

    assert os.environ.get("MPLBACKEND") == "Agg"  # the trap, as CI sets it
    result = course_cli("run", str(FIXTURES / "15_figure.ipynb"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    nb = nbformat.read(tmp_path / "15_figure.ipynb", as_version=4)
    outputs = nb.cells[-1].outputs
    assert any("image/png" in output.get("data", {}) for output in outputs), outputs
    assert "without encryption" not in result.stdout + result.stderr
    assert not list(tmp_path.glob("kernel-ipc*")), "ipc socket files left in the output folder"
