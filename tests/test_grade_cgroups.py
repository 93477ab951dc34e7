"""Limits on a kernel's whole process tree (course.grade.isolation.cgroups).

Three layers: parsing what the system says about its cgroups (any
machine), the v2 file protocol against a folder laid out like a delegated
cgroup v2 tree (any machine: no v2 controllers can be delegated on a host
whose controllers are bound to v1, like the CI machine), and the real
thing on this machine's cgroups (root and a writable memory + pids
hierarchy; skipped with the reason otherwise): processes forked inside a
kernel's group share its memory, task and CPU limits.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from course.errors import CourseError
from course.grade.isolation import cgroups
from course.grade.isolation.lifecycle import open_tree_limits

V1_MOUNTINFO = """\
25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
31 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_MEMBERSHIP = "8:pids:/\n4:memory:/ci/job7\n2:cpuacct:/\n1:cpu:/\n0::/\n"


def test_v1_hierarchies_are_found_with_the_graders_own_group():
    version, own = cgroups.own_groups(V1_MOUNTINFO, V1_MEMBERSHIP)
    assert version == 1
    assert own == {
        "memory": "/sys/fs/cgroup/memory/ci/job7",
        "pids": "/sys/fs/cgroup/pids",
        "cpu": "/sys/fs/cgroup/cpu",
        "cpuacct": "/sys/fs/cgroup/cpuacct",
    }


def test_a_container_mount_that_does_not_reach_the_group_is_no_group():
    """Without a cgroup namespace a container mounts its own group as the root of each hierarchy."""
    mountinfo = (
        "28 25 0:25 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "29 25 0:26 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    )
    inside = "8:pids:/docker/abc/x\n4:memory:/docker/abc/x\n"
    assert cgroups.own_groups(mountinfo, inside) == (
        1,
        {"memory": "/sys/fs/cgroup/memory/x", "pids": "/sys/fs/cgroup/pids/x"},
    )
    elsewhere = "8:pids:/docker/abc/x\n4:memory:/elsewhere\n"
    assert cgroups.own_groups(mountinfo, elsewhere) == "no cgroup mount here reaches this process's memory cgroup"


def test_no_controllers_gives_one_line_why():
    reason = cgroups.own_groups("31 25 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "0::/user.slice\n")
    assert reason == "cgroup v2 offers no memory and pids controllers here, and no cgroup v1 hierarchy has them"
    assert cgroups.own_groups("", "") == "no cgroup mount here reaches this process's memory and pids cgroup"


def _fake_v2(tmp_path: Path, procs: str) -> tuple[Path, Path, Path]:
    """A folder laid out like a cgroup v2 mount where the grader's group is /grader."""
    root = tmp_path / "cgroup"
    own = root / "grader"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (own / "cgroup.procs").write_text(procs)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"31 25 0:28 / {root} rw,nosuid - cgroup2 cgroup2 rw\n")
    membership = tmp_path / "self-cgroup"
    membership.write_text("0::/grader\n")
    return own, mountinfo, membership


def test_v2_protocol_delegates_then_limits_each_kernel(tmp_path):
    own, mountinfo, membership = _fake_v2(tmp_path, f"{os.getpid()}\n")
    run = cgroups.open_run("course-grade-test", str(mountinfo), str(membership))
    assert isinstance(run, cgroups.RunGroups), run
    assert run.version == 2 and run.description == "per process tree (cgroup v2: memory, pids, cpu)"
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    parent = own / "course-grade-test"
    assert (parent / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"

    group = run.new_kernel(3, cgroups.TreeLimits(memory_bytes=2 * 2**30, processes=64, cpus=1.5))
    folder = Path(group.dirs()[0])
    assert folder.parent == parent and folder.name.startswith("kernel-3-")
    assert (folder / "memory.max").read_text() == str(2 * 2**30)
    assert (folder / "pids.max").read_text() == "64"
    assert (folder / "cpu.max").read_text() == "150000 100000"
    (folder / "memory.peak").write_text(f"{300 * 2**20}\n")
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n")
    (folder / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (folder / "pids.peak").write_text("17\n")
    assert group.usage().to_json() == {
        "memory_peak_mb": 300.0,
        "oom_kills": 2,
        "cpu_seconds": 2.5,
        "processes_peak": 17,
    }


def test_v2_grader_alone_in_its_group_moves_itself_into_a_leaf(tmp_path, monkeypatch):
    """v2's "no internal processes" rule, emulated: subtree_control refuses while the group holds processes."""
    own, mountinfo, membership = _fake_v2(tmp_path, f"{os.getpid()}\n")
    real_write = cgroups._write

    def kernel_rules(path: str, value: str) -> None:
        folder, name = os.path.split(path)
        if name == "cgroup.subtree_control" and (cgroups._read(os.path.join(folder, "cgroup.procs")) or "").split():
            raise cgroups.CgroupError(f"cannot write {value!r} to {path}: Device or resource busy")
        if name == "cgroup.procs" and value == "0":  # a move: out of the old group, into this one
            (own / "cgroup.procs").write_text("")
            value = str(os.getpid())
        real_write(path, value)

    monkeypatch.setattr(cgroups, "_write", kernel_rules)
    run = cgroups.open_run("course-grade-test", str(mountinfo), str(membership))
    assert isinstance(run, cgroups.RunGroups), run
    assert (own / "course-grade-host" / "cgroup.procs").read_text() == str(os.getpid())
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"


def test_v2_group_shared_with_other_processes_is_refused_with_the_fix(tmp_path):
    """A v2 group with other processes in it cannot hand controllers down: say so, and how to fix it.

    (On a real v2 tree the first write to subtree_control fails with EBUSY;
    here a folder stands in for it, so the refusal is made explicit.)
    """
    own, mountinfo, membership = _fake_v2(tmp_path, f"{os.getpid()}\n1\n")
    (own / "cgroup.subtree_control").mkdir()  # writing to it fails, as EBUSY would
    reason = cgroups.open_run("course-grade-test", str(mountinfo), str(membership))
    assert isinstance(reason, str)
    assert "also holds 1 other process(es)" in reason and "systemd-run --scope -p Delegate=yes" in reason
    assert not (own / "course-grade-test").exists()


def test_modes_off_and_required(monkeypatch):
    assert open_tree_limits("off", "x") == (None, "per process only (c.CourseGrade.process_tree_limits = 'off')")
    monkeypatch.setattr(cgroups, "open_run", lambda name: "no cgroup mount here reaches this process's pids cgroup")
    assert open_tree_limits("auto", "x") == (
        None,
        "per process only: no cgroup mount here reaches this process's pids cgroup",
    )
    with pytest.raises(CourseError, match="process_tree_limits = 'required', but no cgroup is available: no cgroup"):
        open_tree_limits("required", "x")


def test_the_setting_is_checked(tmp_path):
    from traitlets.config import Config

    from course.grade.config import Settings, apply_config_file

    class Holder:
        config = Config({"CourseGrade": {"process_tree_limits": "sometimes"}})

    with pytest.raises(CourseError, match="process_tree_limits"):
        apply_config_file(Settings(course_dir=tmp_path, assignment="a"), Holder())
    Holder.config = Config({"CourseGrade": {"process_tree_limits": "required"}})
    assert apply_config_file(Settings(course_dir=tmp_path, assignment="a"), Holder()).process_tree_limits == "required"


# --------------------------------------------------------------------------
# the real thing


@pytest.fixture
def run_groups():
    """This machine's cgroups for one test, removed after it."""
    if os.geteuid() != 0:
        pytest.skip("cgroups need root")
    run = cgroups.open_run(f"course-grade-test-{os.getpid()}")
    if isinstance(run, str):
        pytest.skip(f"no writable cgroups here: {run}")
    yield run
    run.remove()
    assert not any(os.path.exists(folder) for folder in run.folders.values())


def _in_group(group: cgroups.KernelGroup, code) -> int:
    """Fork a child that joins ``group`` and runs ``code()``; its exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            group.join()
            status = code()
        finally:
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _children(count: int, body) -> list[int]:
    """Fork ``count`` children running ``body()`` then exiting 0; their exit statuses."""
    pids = []
    for _ in range(count):
        try:
            pid = os.fork()
        except OSError:
            continue
        if pid == 0:  # pragma: no cover - the grandchild
            body()
            os._exit(0)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]


def test_forked_children_share_one_memory_limit(run_groups):
    """Four children of 90 MiB each cannot all hold it under a 200 MiB tree limit; the tree never passes it."""
    group = run_groups.new_kernel(0, cgroups.TreeLimits(memory_bytes=200 * 2**20, processes=64, cpus=1))

    def hog():
        statuses = _children(4, lambda: (b"x" * (90 * 2**20), time.sleep(1.5)))
        return sum(s == 0 for s in statuses)

    held = _in_group(group, hog)
    used = group.usage()
    assert held <= 2
    assert used.oom_kills >= 2
    assert used.memory_peak_mb <= 200
    group.remove()


def test_the_task_limit_counts_the_whole_tree(run_groups):
    group = run_groups.new_kernel(1, cgroups.TreeLimits(memory_bytes=2**30, processes=10, cpus=1))
    started = _in_group(group, lambda: len(_children(30, lambda: time.sleep(1))))
    assert 0 < started < 10
    assert group.usage().processes_peak == 10
    group.remove()


def test_spinning_children_share_the_cpu_quota(run_groups):
    """Two spinners in a group allowed half a CPU use at most about half a CPU between them."""
    group = run_groups.new_kernel(2, cgroups.TreeLimits(memory_bytes=2**30, processes=16, cpus=0.5))

    def spin():
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            pass

    started = time.monotonic()
    _in_group(group, lambda: len(_children(2, spin)) - 2)
    wall = time.monotonic() - started
    used = group.usage().cpu_seconds
    assert used is not None and used <= 0.5 * wall * 1.15 + 0.1, (used, wall)
    group.remove()


def test_a_quota_above_an_ancestors_is_left_to_the_ancestor(run_groups):
    """v1 refuses a child CPU quota above an ancestor's (EINVAL): a grader in a container with
    ``--cpus 0.5`` must still start kernels, which then share the container's half CPU."""
    if run_groups.version != 1 or "cpu" not in run_groups.folders:
        pytest.skip("the refusal is cgroup v1's (v2 takes the smaller of the two)")
    Path(run_groups.folders["cpu"], "cpu.cfs_quota_us").write_text("50000")  # the run may use half a CPU
    group = run_groups.new_kernel(4, cgroups.TreeLimits(memory_bytes=2**30, processes=16, cpus=2))
    assert Path(group.folders["cpu"], "cpu.cfs_quota_us").read_text().strip() == "-1"  # bounded by its parent

    def spin():
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            pass

    started = time.monotonic()
    _in_group(group, lambda: len(_children(2, spin)) - 2)
    used, wall = group.usage().cpu_seconds, time.monotonic() - started
    assert used <= 0.5 * wall * 1.15 + 0.1, (used, wall)
    group.remove()


def test_remove_kills_what_is_left(run_groups):
    group = run_groups.new_kernel(3, cgroups.TreeLimits(memory_bytes=2**30, processes=16, cpus=1))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a process that never ends by itself
        group.join()
        _children(3, lambda: time.sleep(3600))
        os._exit(0)
    deadline = time.monotonic() + 10
    while len(group.pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(group.pids()) == 4
    group.remove()
    os.waitpid(pid, 0)
    assert not any(os.path.exists(folder) for folder in group.dirs())


# --------------------------------------------------------------------------
# in a `course grade` run

SPIN_TWO = "import os\nfor _ in range(2):\n    if os.fork() == 0:\n        while True:\n            pass\n"


def _spinning_class(tmp_path: Path, mode: str) -> dict:
    """Grade one submission whose relu cell leaves two spinners behind while later cells sleep."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "grade"))
    import classroom as cls

    if os.geteuid() != 0:
        pytest.skip("course grade's cgroups need root")
    config = f'c.CourseGrade.cpu_seconds = 4\nc.CourseGrade.process_tree_limits = "{mode}"\n'
    course = cls.new_course(tmp_path, config)
    slow = {k: "import time\ntime.sleep(6)\n" + cls.CORRECT[k] for k in ("pick_device", "normalize")}
    cls.submit_answers(course, "spinner", {**cls.CORRECT, "relu": SPIN_TWO + cls.RELU, **slow})
    proc = cls.run_grade(course, "--jobs", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((course / "results" / "ps_fixture" / "submissions" / "spinner.json").read_text())
    return {"proc": proc, "result": result, "cells": {c["grade_id"]: c for c in result["notebooks"][0]["cells"]}}


@pytest.mark.slow
def test_cpu_seconds_count_the_whole_tree(tmp_path):
    """Two spinners left running burn the submission's CPU seconds: the rest of it is `budget`.

    Each spinner alone stays within RLIMIT_CPU (4 s each, then SIGXCPU);
    together they pass the tree's 4 CPU seconds, which the grader checks
    between cells.
    """
    graded = _spinning_class(tmp_path, "auto")
    reason = graded["proc"].stdout.split("kernel limits: ", 1)[1].splitlines()[0]
    if reason.startswith("per process only"):
        pytest.skip(reason)
    cells = graded["cells"]
    assert cells["test_relu"]["status"] == "passed"
    stopped = [c for c in cells.values() if c["status"] == "budget"]
    assert len(stopped) == 1 and "over the submission's CPU budget of 4 s" in stopped[0]["message"], cells
    assert cells["test_labels"]["status"] == "not-run"
    assert graded["result"]["notebooks"][0]["resources"]["cpu_seconds"] > 4


@pytest.mark.slow
def test_without_cgroups_only_each_process_is_limited(tmp_path):
    """The same submission with process_tree_limits = "off": each spinner dies at its own 4 s, the kernel goes on."""
    graded = _spinning_class(tmp_path, "off")
    assert "kernel limits: per process only (c.CourseGrade.process_tree_limits = 'off')" in graded["proc"].stdout
    assert all(c["status"] == "passed" for c in graded["cells"].values()), graded["cells"]
    assert "resources" not in graded["result"]["notebooks"][0]
