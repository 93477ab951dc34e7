"""Limits on a kernel's whole process tree: one control group (cgroup) per kernel.

rlimits (see :func:`course.grade.isolation.sandbox.apply_limits`) hold per
*process*: a kernel that forks four children may use four times its memory
and CPU.  A Linux control group counts every process in it together, and
children are born in their parent's group, so a kernel and everything it
starts share one budget:

* **memory**: ``memory_mb`` + ``disk_mb`` for the whole tree (the box is a
  tmpfs, and its files live in RAM too).  Going over it wakes the kernel's
  OOM killer *inside the group only*: one of the student's processes dies,
  never another student's kernel or the grader.
* **processes**: ``processes`` tasks (threads included) in the group.
* **CPU**: the tree runs on at most ``threads`` CPUs (a bandwidth quota),
  and its CPU seconds together are checked against ``cpu_seconds`` between
  cells.

Two kinds of Linux cgroups exist, and both are used where they work:

* **cgroup v2** (one "unified" tree): ``memory.max``, ``memory.swap.max``,
  ``pids.max``, ``cpu.max``, ``cgroup.kill``.  A v2 group may hand
  controllers to child groups only while it holds no processes itself, so
  the grader's own group must be delegated to it (``systemd-run --scope -p
  Delegate=yes``, or a container with its own cgroup); when the grader is
  the only process there, it moves itself into a leaf group first.
* **cgroup v1** (one tree per controller, as on older hosts and many CI
  machines): ``memory.limit_in_bytes`` (and ``memsw`` so swap does not
  stretch it), ``pids.max``, ``cpu.cfs_quota_us``, ``cpuacct.usage``.

Layout: ``<the grader's own cgroup>/course-grade-<run>/kernel-<slot>-<id>``.
The worker (root) creates a kernel's group before asking the zygote for a
kernel; the kernel's supervisor joins it first thing, before it builds the
sandbox, so everything it and the kernel start is counted; the worker
reads the group's figures between cells, then kills what is left and
removes the group.  At the start of a run one probe group takes the
configured limits and is removed, so a limit the machine refuses shows
up then, not as submissions that cannot be graded.  Where no cgroup is
writable (a container's read-only ``/sys/fs/cgroup``, no root, macOS),
``course grade`` says so in one line and keeps the per-process limits
(``c.CourseGrade.process_tree_limits = "auto"``), or refuses to grade
(``"required"``).  Kernels never see ``/sys/fs/cgroup`` (the sandbox hides
it), so none can watch or touch another's group.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import time
from dataclasses import dataclass, field

from course.grade.isolation.linux import parse_mountinfo

#: Controllers a kernel group must have: without them a tree limit is no limit.
REQUIRED = ("memory", "pids")
#: Controllers used when present (CPU quota and CPU accounting).
OPTIONAL = ("cpu", "cpuacct")
#: CFS period of the CPU quota, in microseconds (the kernel's default).
CPU_PERIOD_US = 100_000


class CgroupError(RuntimeError):
    """A control group could not be created, joined or limited (``errno`` says why, when a system call refused)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass
class TreeLimits:
    """What one kernel's group may use together (see the module docstring)."""

    memory_bytes: int
    processes: int
    cpus: float


@dataclass
class Usage:
    """What a kernel's processes used together, as the instructor sees it in the JSON result."""

    memory_peak_mb: float | None = None
    oom_kills: int = 0
    cpu_seconds: float | None = None
    #: CFS periods in which the CPU quota stopped the tree (0: the quota never had to act).
    cpu_throttled: int | None = None
    processes_peak: int | None = None

    def to_json(self) -> dict:
        """Rounded figures; None for what this cgroup version (or kernel) does not report."""
        return {
            "memory_peak_mb": None if self.memory_peak_mb is None else round(self.memory_peak_mb, 1),
            "oom_kills": self.oom_kills,
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 2),
            "cpu_throttled": self.cpu_throttled,
            "processes_peak": self.processes_peak,
        }


# --------------------------------------------------------------------------
# small file helpers (cgroup files are tiny text files)


def _read(path: str) -> str | None:
    """The text of a cgroup file, or None when it does not exist (or vanished)."""
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _write(path: str, value: str) -> None:
    """Write one value to an existing cgroup file; a refusal becomes a CgroupError naming the file and the reason.

    Never creates the file: on a cgroup file system the kernel makes every
    interface file, so a missing one means "not a cgroup" (or a controller
    feature this kernel lacks), never something to invent.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as error:
        raise CgroupError(f"cannot write {value!r} to {path}: {os.strerror(error.errno or 0)}", error.errno) from None


def _mkgroup(folder: str) -> None:
    """Create one cgroup folder, and check the kernel made it a cgroup (it adds ``cgroup.procs`` itself).

    A plain folder (a path covered by another mount, say) would take every
    limit without enforcing any.
    """
    os.mkdir(folder, 0o755)
    if not os.path.exists(os.path.join(folder, "cgroup.procs")):
        os.rmdir(folder)
        raise CgroupError(f"{os.path.dirname(folder)} is not a cgroup file system")


def _field(text: str | None, key: str) -> int | None:
    """``key N`` from a flat-keyed file such as ``memory.events`` or ``cpu.stat``."""
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return None


def _number(text: str | None) -> int | None:
    """A file holding one integer, or None."""
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


# --------------------------------------------------------------------------
# finding the grader's own cgroups


@dataclass
class Mount:
    """One mounted cgroup hierarchy: where it is, and which cgroup is its root."""

    version: int
    point: str
    root: str
    controllers: tuple[str, ...]


def parse_mounts(mountinfo: str) -> list[Mount]:
    """The cgroup (v1) and cgroup2 mounts listed in a ``/proc/self/mountinfo`` text.

    For v1 the controllers are among the file system's own options (``rw,memory``).
    """
    mounts = []
    for entry in parse_mountinfo(mountinfo):
        if entry.fstype == "cgroup2":
            mounts.append(Mount(2, entry.point, entry.root, ()))
        elif entry.fstype == "cgroup":
            names = tuple(o for o in entry.options if o in (*REQUIRED, *OPTIONAL))
            if names:
                mounts.append(Mount(1, entry.point, entry.root, names))
    return mounts


def parse_membership(proc_cgroup: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> path; the v2 entry under the key ``""``."""
    found = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, names, path = parts
        for name in names.split(",") if names else [""]:
            found[name] = path
    return found


def _inside(mount: Mount, path: str) -> str | None:
    """The folder of cgroup ``path`` in ``mount``, or None if the mount does not reach it."""
    root = mount.root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None
    if ".." in path.split("/"):
        return None
    return os.path.join(mount.point, path[len(root) :].lstrip("/")).rstrip("/") or "/"


def own_groups(mountinfo: str, proc_cgroup: str) -> tuple[int, dict[str, str]] | str:
    """The cgroup version to use and the grader's own group folder per controller, or why none.

    cgroup v2 wins when its tree offers memory and pids; otherwise v1 when
    memory and pids are mounted (cpu and cpuacct are used if present).
    """
    mounts = parse_mounts(mountinfo)
    member = parse_membership(proc_cgroup)
    for mount in mounts:
        if mount.version == 2 and "" in member:
            folder = _inside(mount, member[""])
            offered = (_read(os.path.join(folder, "cgroup.controllers")) or "").split() if folder else []
            if folder and all(name in offered for name in REQUIRED):
                return 2, {name: folder for name in (*REQUIRED, *(c for c in ("cpu",) if c in offered))}
    folders = {}
    for mount in mounts:
        for name in mount.controllers if mount.version == 1 else ():
            if name in member and name not in folders:
                folder = _inside(mount, member[name])
                if folder:
                    folders[name] = folder
    missing = [name for name in REQUIRED if name not in folders]
    if not missing:
        return 1, folders
    if any(m.version == 2 for m in mounts) and not any(m.version == 1 for m in mounts):
        return "cgroup v2 offers no memory and pids controllers here, and no cgroup v1 hierarchy has them"
    return f"no cgroup mount here reaches this process's {' and '.join(missing)} cgroup"


# --------------------------------------------------------------------------
# one kernel's group


@dataclass
class KernelGroup:
    """The cgroup folders of one kernel (one per v1 hierarchy, a single one on v2).

    Plain data, so it travels to the zygote inside the kernel's BoxSpec.
    """

    version: int
    folders: dict[str, str] = field(default_factory=dict)
    memory_limit_mb: float = 0

    def dirs(self) -> list[str]:
        """Each folder once (v1 may mount cpu and cpuacct together)."""
        return sorted(set(self.folders.values()))

    def join(self) -> None:
        """Move the calling process into the group ("0" means the writer itself)."""
        for folder in self.dirs():
            _write(os.path.join(folder, "cgroup.procs"), "0")

    def pids(self) -> list[int]:
        """The processes in the group now (pid 0 stands for one this pid namespace cannot see: skipped)."""
        found: set[int] = set()
        for folder in self.dirs():
            found.update(int(p) for p in (_read(os.path.join(folder, "cgroup.procs")) or "").split() if int(p) > 0)
        return sorted(found)

    def usage(self) -> Usage:
        """Peak memory, OOM kills, CPU seconds and peak task count of the whole tree so far."""
        memory = self.folders.get("memory", "")
        pids = self.folders.get("pids", "")
        quota = self.folders.get("cpu")
        usage = Usage()
        if quota:
            usage.cpu_throttled = _field(_read(os.path.join(quota, "cpu.stat")), "nr_throttled")
        if self.version == 2:
            peak = _number(_read(os.path.join(memory, "memory.peak")))
            usage.oom_kills = _field(_read(os.path.join(memory, "memory.events")), "oom_kill") or 0
            cpu = _field(_read(os.path.join(memory, "cpu.stat")), "usage_usec")
            usage.cpu_seconds = None if cpu is None else cpu / 1e6
        else:
            peak = _number(_read(os.path.join(memory, "memory.max_usage_in_bytes")))
            usage.oom_kills = _field(_read(os.path.join(memory, "memory.oom_control")), "oom_kill") or 0
            accounting = self.folders.get("cpuacct")
            cpu = _number(_read(os.path.join(accounting, "cpuacct.usage"))) if accounting else None
            usage.cpu_seconds = None if cpu is None else cpu / 1e9
        usage.memory_peak_mb = None if peak is None else peak / 2**20
        usage.processes_peak = _number(_read(os.path.join(pids, "pids.peak")))
        return usage

    def kill(self, patience: float = 10.0) -> bool:
        """SIGKILL everything in the group and wait until it is empty; False if some stay.

        v2 kills the whole group in one step (``cgroup.kill``); on v1 the
        pids are killed until none is left (a fork bomb cannot outrun it:
        ``pids.max`` caps the group, and every new child lands in it).
        """
        deadline = time.monotonic() + patience
        kill_file = os.path.join(self.dirs()[0], "cgroup.kill") if self.version == 2 else ""
        while self.pids():
            if time.monotonic() > deadline:
                return False
            if kill_file and os.path.exists(kill_file):
                _write(kill_file, "1")
            else:
                for pid in self.pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.02)
        return True

    def remove(self) -> None:
        """Kill what is left and delete the group's folders (emptied groups only)."""
        self.kill()
        for folder in self.dirs():
            _rmdir(folder)


def _rmdir(folder: str, patience: float = 5.0) -> None:
    """Remove an empty cgroup folder; the kernel may need a moment after the last exit."""
    deadline = time.monotonic() + patience
    while True:
        try:
            os.rmdir(folder)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                return
            time.sleep(0.05)


# --------------------------------------------------------------------------
# one run's group


@dataclass
class RunGroups:
    """``course-grade-<run>``: the parent of one run's kernel groups, per controller."""

    version: int
    folders: dict[str, str]
    #: Whether the kernels' swap use is limited too (v1 needs swap accounting, v2 ``memory.swap.max``).
    swap_limited: bool = True

    @property
    def description(self) -> str:
        """What the instructor reads in the summary and run.json."""
        names = [n for n in ("memory", "pids", "cpu", "cpuacct") if n in self.folders]
        swap = "" if self.swap_limited else "; swap not limited (no swap accounting)"
        return f"per process tree (cgroup v{self.version}: {', '.join(names)}{swap})"

    def new_kernel(self, slot: int, limits: TreeLimits) -> KernelGroup:
        """Create and limit one kernel's group (not yet joined by anyone)."""
        name = f"kernel-{slot}-{secrets.token_hex(4)}"
        folders = {c: os.path.join(parent, name) for c, parent in self.folders.items()}
        group = KernelGroup(self.version, folders, memory_limit_mb=limits.memory_bytes / 2**20)
        try:
            for folder in group.dirs():
                _mkgroup(folder)
            _limit(group, limits)
        except (OSError, CgroupError) as error:
            group.remove()
            raise CgroupError(f"cannot set up the kernel's cgroup: {error}") from None
        return group

    def remove(self) -> None:
        """Delete the run's group (and any kernel group a killed worker left)."""
        for parent in sorted(set(self.folders.values())):
            for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
                child = os.path.join(parent, name)
                if name.startswith("kernel-") and os.path.isdir(child):
                    leftover = KernelGroup(self.version, {"leftover": child})  # only removed: the key is not read
                    leftover.remove()
            _rmdir(parent)


def _limit(group: KernelGroup, limits: TreeLimits) -> None:
    """Write the memory, task and CPU limits of a fresh kernel group."""
    memory, pids, cpu = (group.folders.get(c) for c in ("memory", "pids", "cpu"))
    quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
    if group.version == 2:
        _write(os.path.join(memory, "memory.max"), str(limits.memory_bytes))
        if os.path.exists(os.path.join(memory, "memory.swap.max")):
            _write(os.path.join(memory, "memory.swap.max"), "0")
        _write(os.path.join(pids, "pids.max"), str(limits.processes))
        if cpu:
            _write(os.path.join(cpu, "cpu.max"), f"{quota} {CPU_PERIOD_US}")
        return
    _write(os.path.join(memory, "memory.limit_in_bytes"), str(limits.memory_bytes))
    if os.path.exists(os.path.join(memory, "memory.memsw.limit_in_bytes")):
        _write(os.path.join(memory, "memory.memsw.limit_in_bytes"), str(limits.memory_bytes))
    _write(os.path.join(pids, "pids.max"), str(limits.processes))
    if cpu:
        _write(os.path.join(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
        try:
            _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(quota))
        except CgroupError as error:
            # v1 refuses a quota above an ancestor's (EINVAL), say a grader in a
            # container with --cpus 0.5: that smaller quota already bounds the kernel.
            if error.errno != errno.EINVAL:
                raise


def swap_limited(group: KernelGroup) -> bool:
    """Whether this machine lets a group's swap use be limited (else a tree may spill into swap)."""
    memory = group.folders.get("memory", "")
    name = "memory.swap.max" if group.version == 2 else "memory.memsw.limit_in_bytes"
    return os.path.exists(os.path.join(memory, name))


def _delegate_v2(own: str) -> None:
    """Let ``own`` (the grader's v2 group) hand memory/pids/cpu to child groups.

    The "no internal processes" rule: a non-root v2 group with processes
    in it cannot enable controllers for its children.  When the grader is
    the only process there, it moves itself into a leaf ``course-grade-host``
    first; when others share the group, it cannot, and says how to fix it.
    """
    offered = (_read(os.path.join(own, "cgroup.controllers")) or "").split()
    wanted = " ".join("+" + c for c in ("memory", "pids", "cpu") if c in offered)
    try:
        _write(os.path.join(own, "cgroup.subtree_control"), wanted)
        return
    except CgroupError as error:
        if error.errno != errno.EBUSY:  # read-only (a container), not allowed, ...: say so
            raise
    others = [int(p) for p in (_read(os.path.join(own, "cgroup.procs")) or "").split() if int(p) != os.getpid()]
    if others:
        raise CgroupError(
            f"cgroup v2: the grader's cgroup {own} also holds {len(others)} other process(es), so it cannot "
            "hand limits to kernel groups; start the grader in a delegated cgroup of its own, e.g. "
            "`systemd-run --scope -p Delegate=yes course grade ...`"
        )
    leaf = os.path.join(own, "course-grade-host")
    if not os.path.isdir(leaf):
        _mkgroup(leaf)
    _write(os.path.join(leaf, "cgroup.procs"), "0")
    try:
        _write(os.path.join(own, "cgroup.subtree_control"), wanted)
    except CgroupError:
        _write(os.path.join(own, "cgroup.procs"), "0")  # back where it was
        _rmdir(leaf)
        raise


def open_run(
    name: str,
    probe: TreeLimits | None = None,
    mountinfo_path: str = "/proc/self/mountinfo",
    cgroup_path: str = "/proc/self/cgroup",
) -> RunGroups | str:
    """Create this run's group under the grader's own; return it, or one line saying why not.

    With ``probe``, one kernel group is also created and limited with those
    limits and removed again, so a limit this machine refuses is found now,
    before any kernel (and not as a submission that cannot be graded).
    """
    if not os.path.exists(cgroup_path):
        return "this system has no cgroups (Linux only)"
    found = own_groups(_read(mountinfo_path) or "", _read(cgroup_path) or "")
    if isinstance(found, str):
        return found
    version, own = found
    folders = {c: os.path.join(parent, name) for c, parent in own.items()}
    made: list[str] = []
    try:
        if version == 2:
            _delegate_v2(next(iter(own.values())))
        for folder in sorted(set(folders.values())):
            _mkgroup(folder)
            made.append(folder)
        if version == 2:
            controllers = " ".join("+" + c for c in folders)
            _write(os.path.join(next(iter(folders.values())), "cgroup.subtree_control"), controllers)
        run = RunGroups(version, folders)
        if probe is not None:
            group = run.new_kernel(0, probe)
            run.swap_limited = swap_limited(group)
            group.remove()
    except (OSError, CgroupError) as error:
        for folder in made:
            _rmdir(folder)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        where = ", ".join(sorted(set(own.values())))
        return f"cannot create cgroups under {where} ({reason})"
    return run
