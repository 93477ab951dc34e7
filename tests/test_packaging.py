"""Installing the course keeps the torch that is already there (the PyTorch 2.8 image's)."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def test_torch_range_admits_the_course_image_and_this_machine():
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    assert torch.specifier.contains("2.8.0") and torch.specifier.contains("2.13.0")
    assert not torch.specifier.contains("2.7.1")


@pytest.mark.slow
def test_pip_would_not_replace_the_installed_torch(tmp_path):
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
    )
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "course" in planned
    assert not planned & {"torch", "nvidia-cudnn-cu12", "nvidia-cublas-cu12", "triton"}, planned


def test_code_is_ruff_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    formatted = [sys.executable, "-m", "ruff", "format", "--check", "."]
    result = subprocess.run(formatted, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
