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

import errno
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


#: Interface files the kernel creates in every new v2 group (those the code writes or reads).
V2_FILES = ("cgroup.procs", "cgroup.subtree_control", "cgroup.controllers", "memory.max", "pids.max", "cpu.max")


class FakeV2:
    """A folder that behaves like a delegated cgroup v2 tree where the grader's group is ``/grader``.

    As the kernel does: a new group comes with its interface files; a group
    holding processes refuses to hand controllers down (EBUSY: the "no
    internal processes" rule); writing "0" to ``cgroup.procs`` moves the
    writer there.  ``refuse`` makes every write fail with that errno (a
    read-only mount, say).
    """

    def __init__(self, tmp_path: Path, monkeypatch, other_processes: int = 0, refuse: int = 0) -> None:
        root = tmp_path / "cgroup"
        self.own = root / "grader"
        self.make(str(self.own), parents=True)
        (self.own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (self.own / "cgroup.procs").write_text("".join(f"{p}\n" for p in [os.getpid(), *range(2, 2 + other_processes)]))
        self.mountinfo = tmp_path / "mountinfo"
        self.mountinfo.write_text(f"31 25 0:28 / {root} rw,nosuid - cgroup2 cgroup2 rw\n")
        self.membership = tmp_path / "self-cgroup"
        self.membership.write_text("0::/grader\n")
        self.refuse = refuse
        self.real_write = cgroups._write
        monkeypatch.setattr(cgroups, "_mkgroup", self.make)
        monkeypatch.setattr(cgroups, "_write", self.write)

    @staticmethod
    def make(folder: str, parents: bool = False) -> None:
        os.makedirs(folder) if parents else os.mkdir(folder)
        for name in V2_FILES:
            Path(folder, name).write_text("")
        Path(folder, "cgroup.controllers").write_text("memory pids cpu\n")

    def write(self, path: str, value: str) -> None:
        folder, name = os.path.split(path)
        if self.refuse:
            raise cgroups.CgroupError(f"cannot write {value!r} to {path}: {os.strerror(self.refuse)}", self.refuse)
        if name == "cgroup.subtree_control" and Path(folder, "cgroup.procs").read_text().split():
            raise cgroups.CgroupError(f"cannot write {value!r} to {path}: Device or resource busy", errno.EBUSY)
        if name == "cgroup.procs" and value == "0":  # a move: out of every group, into this one
            for procs in Path(self.own).rglob("cgroup.procs"):
                procs.write_text("".join(f"{p}\n" for p in procs.read_text().split() if p != str(os.getpid())))
            value = str(os.getpid())
        self.real_write(path, value)

    def open_run(self):
        return cgroups.open_run("course-grade-test", None, str(self.mountinfo), str(self.membership))


def test_v2_protocol_delegates_then_limits_each_kernel(tmp_path, monkeypatch):
    """The grader alone in its group moves itself into a leaf, delegates, and limits each kernel's group."""
    fake = FakeV2(tmp_path, monkeypatch)
    run = fake.open_run()
    assert isinstance(run, cgroups.RunGroups), run
    assert run.version == 2 and run.description == "per process tree (cgroup v2: memory, pids, cpu)"
    own = fake.own
    assert (own / "course-grade-host" / "cgroup.procs").read_text() == str(os.getpid())
    assert (own / "cgroup.procs").read_text() == ""
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
    (folder / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nnr_periods 40\nnr_throttled 25\n")
    (folder / "pids.peak").write_text("17\n")
    assert group.usage().to_json() == {
        "memory_peak_mb": 300.0,
        "oom_kills": 2,
        "cpu_seconds": 2.5,
        "cpu_throttled": 25,
        "processes_peak": 17,
    }


def test_v2_group_shared_with_other_processes_is_refused_with_the_fix(tmp_path, monkeypatch):
    """A v2 group with other processes in it cannot hand controllers down: say so, and how to fix it."""
    fake = FakeV2(tmp_path, monkeypatch, other_processes=1)
    reason = fake.open_run()
    assert isinstance(reason, str)
    assert "also holds 1 other process(es)" in reason and "systemd-run --scope -p Delegate=yes" in reason
    assert not (fake.own / "course-grade-test").exists() and not (fake.own / "course-grade-host").exists()


def test_v2_read_only_mount_is_named_as_such(tmp_path, monkeypatch):
    """In a container /sys/fs/cgroup is read-only: the reason is that, not the processes sharing the group."""
    fake = FakeV2(tmp_path, monkeypatch, other_processes=3, refuse=errno.EROFS)
    reason = fake.open_run()
    assert isinstance(reason, str) and "Read-only file system" in reason and "other process" not in reason


def test_a_plain_folder_is_not_taken_for_a_cgroup(tmp_path):
    """A cgroup path covered by an ordinary folder would take every limit and enforce none."""
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"28 25 0:25 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
        f"29 25 0:26 / {tmp_path}/pids rw - cgroup cgroup rw,pids\n"
    )
    (tmp_path / "memory").mkdir()
    (tmp_path / "pids").mkdir()
    membership = tmp_path / "self-cgroup"
    membership.write_text("8:pids:/\n4:memory:/\n")
    reason = cgroups.open_run("course-grade-test", None, str(mountinfo), str(membership))
    assert isinstance(reason, str) and "is not a cgroup file system" in reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory", "mountinfo", "pids", "self-cgroup"]


def test_pid_zero_is_never_killed(tmp_path):
    """v2 lists a process of another pid namespace as 0, and kill(0) would hit the grader's own group."""
    (tmp_path / "cgroup.procs").write_text("0\n0\n")
    group = cgroups.KernelGroup(1, {"memory": str(tmp_path)})
    assert group.pids() == []
    assert group.kill(patience=0.1) is True


def test_modes_off_and_required(monkeypatch):
    assert open_tree_limits("off", "x") == (None, "per process only (c.CourseGrade.process_tree_limits = 'off')")
    monkeypatch.setattr(
        cgroups, "open_run", lambda name, probe=None: "no cgroup mount here reaches this process's pids cgroup"
    )
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


def test_a_limit_the_machine_refuses_is_found_before_any_kernel(run_groups):
    """The probe kernel group: "auto" falls back with the reason, "required" refuses, nothing is left behind."""
    refused = cgroups.TreeLimits(memory_bytes=2**30, processes=2**31, cpus=1)  # pids.max takes at most 2**22
    name = f"course-grade-probe-{os.getpid()}"
    group, note = open_tree_limits("auto", name, refused)
    assert group is None and note.startswith("per process only: cannot create cgroups under ")
    assert "pids.max: Invalid argument" in note
    with pytest.raises(CourseError, match="pids.max: Invalid argument"):
        open_tree_limits("required", name, refused)
    assert not any(os.path.exists(os.path.join(os.path.dirname(f), name)) for f in run_groups.folders.values())
    fine, note = open_tree_limits("required", name, cgroups.TreeLimits(memory_bytes=2**30, processes=64, cpus=1))
    assert note == fine.description and note.startswith("per process tree (cgroup v")
    fine.remove()


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
        statuses = _children(4, lambda: (b"x" * (90 * 2**20), time.sleep(3)))
        return sum(s == 0 for s in statuses)

    held = _in_group(group, hog)
    used = group.usage()
    assert held <= 2
    assert used.oom_kills >= 2
    assert 180 <= used.memory_peak_mb <= 200  # the tree reached its limit, and no further
    group.remove()


def test_the_task_limit_counts_the_whole_tree(run_groups):
    group = run_groups.new_kernel(1, cgroups.TreeLimits(memory_bytes=2**30, processes=10, cpus=1))
    started = _in_group(group, lambda: len(_children(30, lambda: time.sleep(3))))
    assert 0 < started < 10
    assert group.usage().processes_peak in (10, None)  # None: pids.peak needs Linux >= 6.1
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
    usage = group.usage()
    assert usage.cpu_seconds is not None and usage.cpu_seconds <= 0.5 * wall * 1.15 + 0.1, (usage, wall)
    assert usage.cpu_throttled > 0  # the quota acted (not merely a busy machine)
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
