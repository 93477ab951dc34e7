"""The Linux sandbox around one student's kernel, built from plain system calls.

Each kernel is started by a small supervisor process (see :mod:`course.grade.isolation.zygote`)
that, as root, creates fresh namespaces and prepares a private view of the
file system, then forks the kernel, which drops to an unprivileged uid::

    supervisor (root)   unshare(mount, pid, net, ipc, uts)
      |                 every existing mount -> read-only
      |                 /home /root /run /srv /mnt /media, the course dir,
      |                 the nbgrader exchange, the gradebook's folder -> empty
      |                 a private tmpfs ("box", size-limited) with work/ tmp/ home/,
      |                 the submission's files copied into work/
      |                 /tmp /var/tmp /dev/shm -> box/tmp
      `-- kernel (pid 1 of its pid namespace, own uid, no groups, no_new_privs)
                        rlimits: memory (data), CPU seconds, processes,
                        file size, open files; cwd box/work; no network

What the kernel can still see: the read-only system (/usr, the Python
environment, the course library), its own box and its own connection
directory.  What it cannot do: read the course's source/, other students'
files or the gradebook (hidden), write outside its box (read-only
mounts, its own uid), reach the network (an empty network namespace with
only a downed loopback), see or signal other processes (its own pid
namespace), or outlive the grader (the kernel dies with its supervisor,
and every process in the namespace dies with the kernel).

This module holds the pieces; nothing here imports anything heavy.  The
system calls themselves (through libc: Python 3.11 has no ``os.unshare``
or ``mount``) and the mount table are in :mod:`course.grade.isolation.linux`.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import sys
import time
from dataclasses import asdict, dataclass, field

from course.grade.isolation.cgroups import KernelGroup, TreeLimits
from course.grade.isolation.linux import (
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    NAMESPACES,
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    SandboxError,
    mount,
    mount_table,
    prctl,
    sethostname,
    unshare,
)

#: Folders hidden from every kernel (replaced by an empty read-only tmpfs),
#: besides the course directory, the exchange and the gradebook's folder.
#: ``/sys/fs/cgroup``: other students' kernel groups (their memory and CPU
#: use, live) are nobody else's business.
HIDDEN_SYSTEM_DIRS = ("/home", "/root", "/run", "/srv", "/mnt", "/media", "/var/mail", "/var/spool", "/sys/fs/cgroup")

#: Where a kernel may write scratch files; each is bound to its own box/tmp.
TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass
class Limits:
    """Resource limits of one kernel (and everything it starts).

    ``memory_mb`` is private memory (RLIMIT_DATA) on top of what the kernel
    process already holds when it starts (the preloaded torch included);
    ``processes`` counts threads too, and is per sandbox uid, so one
    student's fork bomb cannot starve another student's kernel.  Where
    cgroups work (:mod:`course.grade.isolation.cgroups`) the same numbers
    also bound the kernel's whole process tree together: memory
    (``memory_mb + disk_mb``), tasks, and CPU seconds.
    """

    def tree(self, cpus: float) -> TreeLimits:
        """The limits of the kernel's whole process tree, which may run on ``cpus`` CPUs."""
        return TreeLimits(memory_bytes=(self.memory_mb + self.disk_mb) * 2**20, processes=self.processes, cpus=cpus)

    memory_mb: int = 4096
    cpu_seconds: int = 900
    processes: int = 256
    file_mb: int = 256
    disk_mb: int = 1024
    open_files: int = 1024


@dataclass
class BoxSpec:
    """Everything the supervisor needs to build one kernel's sandbox.

    Travels as JSON from the grader to the zygote, so it holds only plain
    data.  ``isolate=False`` (``--no-sandbox``) keeps the limits and the
    fast start but runs the kernel as the grader's user, in ``files_from``.
    """

    isolate: bool
    uid: int
    gid: int
    box_dir: str
    files_from: str
    limits: Limits = field(default_factory=Limits)
    hide: list[str] = field(default_factory=list)
    protect: list[str] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: Packages the kernel cannot import (see course.grade.isolation.guard).
    blocked_packages: list[str] = field(default_factory=list)
    #: The kernel's control group (limits on its whole process tree), if any.
    cgroup: KernelGroup | None = None

    def to_json(self) -> dict:
        """A JSON-ready dict (the limits nested)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BoxSpec:
        """Rebuild a spec sent by :meth:`to_json`."""
        data = dict(data)
        data["limits"] = Limits(**data.get("limits", {}))
        if data.get("cgroup"):
            data["cgroup"] = KernelGroup(**data["cgroup"])
        return cls(**data)

    @property
    def ipc_dir(self) -> str:
        """Host folder with the connection file and the kernel's ipc sockets."""
        return os.path.join(self.box_dir, "ipc")

    @property
    def box_mount(self) -> str:
        """Where the private tmpfs is mounted (seen only inside the sandbox)."""
        return os.path.join(self.box_dir, "box")

    @property
    def workdir(self) -> str:
        """The kernel's working directory."""
        return os.path.join(self.box_mount, "work") if self.isolate else self.files_from


# --------------------------------------------------------------------------
# the kernel's connection folder


def mount_ipc(path: str, uid: int, gid: int, size_kb: int = 4096, inodes: int = 64) -> None:
    """Give a kernel's connection folder its own small tmpfs, owned by the kernel's uid.

    The kernel must create its sockets there, on the host side of the
    sandbox, so the folder is writable by the student's code: its own
    size- and inode-limited file system keeps that from filling the host
    (``/run`` is memory) or anyone else's space.
    """
    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={size_kb}k,nr_inodes={inodes},mode=0700")
    os.chown(path, uid, gid)


# --------------------------------------------------------------------------
# the supervisor's part: namespaces and the file system view


def _flags_of(path: str) -> int:
    """The per-mount flags of ``path`` to keep when remounting it."""
    keep = {
        os.ST_NOSUID: MS_NOSUID,
        os.ST_NODEV: MS_NODEV,
        os.ST_NOEXEC: MS_NOEXEC,
        os.ST_NOATIME: MS_NOATIME,
        os.ST_NODIRATIME: MS_NODIRATIME,
        os.ST_RELATIME: MS_RELATIME,
    }
    have = os.statvfs(path).f_flag
    return sum(ms for st, ms in keep.items() if have & st)


def _remount(path: str, readonly: bool) -> None:
    """Make one mount point read-only or writable, keeping its other flags."""
    flags = MS_REMOUNT | MS_BIND | _flags_of(path)
    mount(None, path, None, flags | MS_RDONLY if readonly else flags)


def make_everything_readonly() -> None:
    """Remount every mount of this namespace read-only, except /proc.

    Device nodes still work on a read-only /dev (writing /dev/null is not
    a write to the file system).  Over-mounted mount points are skipped:
    only the top one can be reached.
    """
    seen = set()
    for point in reversed([entry.point for entry in mount_table()]):
        if point in seen or point == "/proc" or point.startswith("/proc/"):
            continue
        seen.add(point)
        if not os.path.exists(point) or os.statvfs(point).f_flag & os.ST_RDONLY:
            continue
        try:
            _remount(point, readonly=True)
        except SandboxError as error:
            # Mounts the kernel locks (e.g. some /sys entries) refuse; only
            # a writable one that stays writable matters.
            if not os.statvfs(point).f_flag & os.ST_RDONLY and not point.startswith("/sys"):
                raise SandboxError(f"cannot make {point} read-only: {error}") from None


def _under(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or inside it."""
    folder = folder.rstrip("/") or "/"
    return path == folder or path.startswith(folder + "/") or folder == "/"


def _bind_back(path: str, fd: int, writable: bool) -> None:
    """Recreate ``path`` inside a hiding tmpfs and bind the original there."""
    if os.path.isdir(f"/proc/self/fd/{fd}"):
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()
    mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    _remount(path, readonly=not writable)


def hide(folder: str, keep: dict[str, tuple[int, bool]]) -> None:
    """Cover ``folder`` with an empty read-only tmpfs, keeping some paths.

    ``keep`` maps paths to ``(O_PATH fd opened before hiding, writable)``;
    each one under ``folder`` is bound back at its own path, so the kernel
    sees the same absolute paths as the grader for what it may use.
    """
    if not os.path.isdir(folder) or os.path.islink(folder):
        return
    mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    for path, (fd, writable) in sorted(keep.items()):
        if path != folder and _under(path, folder):
            _bind_back(path, fd, writable)
    _remount(folder, readonly=True)


def _copy_tree(src: str, dst: str, uid: int, gid: int) -> None:
    """Copy the submission's files into the box, owned by the sandbox user.

    Only regular files and folders are copied (nothing a link points to),
    and no notebook: the notebook being graded holds the instructor's
    tests, hidden ones included, and the kernel gets its cells one by one
    from the grader instead.
    """
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        target = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(target, exist_ok=True)
        os.chown(target, uid, gid)
        for name in files:
            if name.endswith(".ipynb"):
                continue
            source = os.path.join(root, name)
            try:
                fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # a link or something that vanished
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                out = os.path.join(target, name)
                with open(out, "wb") as copy:
                    shutil.copyfileobj(handle, copy)
            os.chown(out, uid, gid)
            os.chmod(out, 0o600)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d)) and d != ".ipynb_checkpoints"]


def build_box(spec: BoxSpec) -> None:
    """Prepare the kernel's file system view; run in the new mount namespace.

    Order matters: the files are copied into the box before the course
    directory disappears, every inherited mount turns read-only before the
    new (writable) box is reachable again, and each hidden folder is
    covered before the paths the kernel needs are bound back into it.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    box = spec.box_mount
    size = spec.limits.disk_mb
    mount(
        "tmpfs",
        box,
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={size}m,mode=0700,uid={spec.uid},gid={spec.gid}",
    )
    for name in ("work", "tmp", "home"):
        os.mkdir(os.path.join(box, name), 0o700)
        os.chown(os.path.join(box, name), spec.uid, spec.gid)
    _copy_tree(spec.files_from, os.path.join(box, "work"), spec.uid, spec.gid)

    # Open everything to keep before anything is covered.
    keep: dict[str, tuple[int, bool]] = {}
    for path in spec.expose:
        if os.path.exists(path):
            keep[path] = (os.open(path, os.O_PATH), False)
    keep[spec.box_dir] = (os.open(spec.box_dir, os.O_PATH | os.O_DIRECTORY), True)

    make_everything_readonly()
    _remount(box, readonly=False)
    # The connection folder must stay writable: the kernel creates its sockets there.
    mount(spec.box_dir, spec.box_dir, None, MS_BIND | MS_REC)
    _remount(spec.box_dir, readonly=False)
    if os.path.ismount(spec.ipc_dir):  # its own small tmpfs (see mount_ipc), made read-only above
        _remount(spec.ipc_dir, readonly=False)

    for folder in sorted(set(spec.hide), key=len):
        hide(folder, keep)
    own = {spec.box_dir: keep[spec.box_dir]}
    for folder in sorted(set(spec.protect), key=len):
        # Protected folders (course, exchange, gradebook) stay hidden even
        # when an exposed path contains them; only the kernel's own box
        # and exposed paths strictly inside them come back.
        inside = {p: v for p, v in keep.items() if _under(p, folder) and p != folder}
        inside.update({p: v for p, v in own.items() if _under(p, folder)})
        hide(folder, inside)

    tmp = os.path.join(box, "tmp")
    temp_dirs = [f for f in TEMP_DIRS if os.path.isdir(f) and not _under(spec.box_dir, f)]
    for folder in temp_dirs:
        mount(tmp, folder, None, MS_BIND)
    # A path to keep that lived in a temp folder (say an HF cache in /tmp)
    # comes back, read-only, on top of the kernel's own tmp.
    for path, (fd, _) in sorted(keep.items()):
        inside_temp = any(_under(path, folder) for folder in temp_dirs)
        holds_protected = any(_under(p, path) for p in spec.protect)
        if path != spec.box_dir and inside_temp and not holds_protected:
            _bind_back(path, fd, writable=False)
    for fd, _ in keep.values():
        os.close(fd)


# --------------------------------------------------------------------------
# the kernel's part: limits and privileges


def data_memory_bytes() -> int:
    """Private writable memory this process maps now (VmData), in bytes; 0 if unknown."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def apply_limits(limits: Limits) -> None:
    """Set the rlimits; memory is counted on top of what the kernel holds now.

    Memory is limited with RLIMIT_DATA (private writable mappings: the
    Python heap, tensors in RAM, thread stacks) rather than RLIMIT_AS
    (address space): CUDA reserves tens of GB of address space that it
    never touches, and an address-space limit would break every GPU kernel.
    GPU memory itself is not limited here.
    """
    mib = 1024 * 1024
    held = data_memory_bytes()
    memory = held + limits.memory_mb * mib if held else resource.RLIM_INFINITY
    settings = {
        resource.RLIMIT_DATA: (memory, memory),
        resource.RLIMIT_CPU: (limits.cpu_seconds, limits.cpu_seconds + 5),
        resource.RLIMIT_NPROC: (limits.processes, limits.processes),
        resource.RLIMIT_FSIZE: (limits.file_mb * mib, limits.file_mb * mib),
        resource.RLIMIT_NOFILE: (limits.open_files, limits.open_files),
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, value in settings.items():
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = tuple(hard if v == resource.RLIM_INFINITY else min(v, hard) for v in value)
        try:
            resource.setrlimit(which, value)
        except (ValueError, OSError):  # a limit this system does not allow lowering
            pass


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good: no groups, no way back, no setuid gain."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    # Changing uid clears "dumpable", which makes /proc/self root-owned and
    # breaks ordinary tools inside the kernel; core dumps stay off (RLIMIT_CORE).
    prctl(PR_SET_DUMPABLE, 1)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SandboxError("could not drop privileges")


def enter_kernel_namespace(spec: BoxSpec) -> None:
    """In the kernel (pid 1 of the new pid namespace): /proc and hostname."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    sethostname("sandbox")


def redirect_stdio(log_path: str | None) -> None:
    """stdin from /dev/null; stdout and stderr to the kernel's own log file."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if log_path:
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    else:
        out = os.open(os.devnull, os.O_WRONLY)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)


# --------------------------------------------------------------------------
# availability


def unavailable_reason() -> str | None:
    """Why the sandbox cannot run here, or None when it can.

    Tries the real thing in a throwaway child: new namespaces, a tmpfs, a
    read-only remount and a uid switch.  The reason is one line for the user.
    """
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux namespaces, and this is {sys.platform}"
    if os.geteuid() != 0:
        return (
            "the sandbox switches each kernel to an unprivileged uid and builds namespaces, "
            "which needs root (run `sudo course grade ...`)"
        )
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read)
        message = b""
        try:
            unshare(NAMESPACES)
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k")
            _remount("/tmp", readonly=True)
            drop_privileges(65534, 65534)
        except (OSError, SandboxError) as error:
            message = str(error).encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        message = handle.read().decode(errors="replace")
    os.waitpid(pid, 0)
    if message:
        return f"cannot build the kernel sandbox ({message}); namespaces or uid switching are not available here"
    return None


def ensure_private_dir(path: str, mode: int = 0o711) -> None:
    """Create a root-owned folder the sandbox users may cross but not list."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or (os.geteuid() == 0 and st.st_uid != 0):
        raise SandboxError(f"{path} is not a root-owned folder")


def processes_of(uid: int) -> list[int]:
    """Pids whose real or effective uid is ``uid`` (zombies included)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as handle:
                for line in handle:
                    if line.startswith("Uid:"):
                        real, effective = line.split()[1:3]
                        if int(real) == uid or int(effective) == uid:
                            found.append(int(name))
                        break
        except (OSError, ValueError):
            continue  # gone meanwhile
    return found


def _kill_all_as(uid: int) -> None:
    """One ``kill(-1, SIGKILL)`` from a child that became ``uid``.

    kill(-1) signals, in one sweep, every process the caller may signal,
    which for an unprivileged uid is exactly its own processes: a fork bomb
    cannot out-fork it the way a pid-by-pid kill can be out-forked.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def kill_leftovers_of(uid: int, patience: float = 30.0) -> bool:
    """Kill every process of ``uid`` and wait until they are gone; False if some stay.

    A kernel's processes die with its pid namespace, but not instantly: a
    fork bomb's hundreds of processes take a moment to be reaped, and until
    then they count against the uid's process limit, which would make the
    next kernel of this uid fail to start its threads.
    """
    deadline = time.monotonic() + patience
    while processes_of(uid):
        if time.monotonic() > deadline:
            return False
        _kill_all_as(uid)
        time.sleep(0.02)
    return True
