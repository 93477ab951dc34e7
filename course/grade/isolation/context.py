"""What a grading worker knows about kernels: its sandbox uid, the zygote, the rules.

nbgrader builds its preprocessors itself (from class names in the
configuration), so :class:`~course.grade.execute` cannot receive these
facts as arguments; the worker installs one :class:`KernelContext` per
process and the Execute preprocessor reads it.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field

from course.grade.isolation.cgroups import RunGroups
from course.grade.isolation.linux import SandboxError, umount
from course.grade.isolation.sandbox import HIDDEN_SYSTEM_DIRS, BoxSpec, Limits, mount_ipc

#: Variables every kernel gets from the grader's environment when set.
BASE_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TERM")


@dataclass
class KernelContext:
    """Per-worker facts for starting sandboxed kernels."""

    isolate: bool
    slot: int
    uid: int
    run_dir: str
    zygote: object
    limits: Limits
    threads: int
    max_output_bytes: int
    hide: list[str] = field(default_factory=list)
    protect: list[str] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    pass_env: list[str] = field(default_factory=list)
    blocked_packages: list[str] = field(default_factory=list)
    budget_seconds: float = 0.0
    max_cells: int = 0
    #: The run's cgroups (limits on each kernel's whole process tree), None where unavailable.
    cgroups: RunGroups | None = None

    def kernel_env(self, box_dir: str) -> dict[str, str]:
        """The environment of a kernel: a short allow-list, never the grader's secrets."""
        if not self.isolate:
            env = dict(os.environ)
        else:
            env = {name: os.environ[name] for name in (*BASE_ENV, *self.pass_env) if name in os.environ}
            box = os.path.join(box_dir, "box")
            env.update(
                PATH=os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]),
                HOME=os.path.join(box, "home"),
                TMPDIR=os.path.join(box, "tmp"),
            )
            env.setdefault("LANG", "C.UTF-8")
        env.update({k: v for k, v in os.environ.items() if k.startswith("NBGRADER_")})
        threads = str(self.threads)
        env.update(
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
            COURSE_GRADE_MAX_OUTPUT=str(self.max_output_bytes),
            PYDEVD_DISABLE_FILE_VALIDATION="1",
        )
        return env

    def new_box(self, files_from: str) -> BoxSpec:
        """Create the host folder of one kernel and describe its sandbox."""
        box_dir = os.path.join(self.run_dir, "boxes", f"{self.slot}-{secrets.token_hex(6)}")
        os.makedirs(os.path.join(box_dir, "ipc"))
        os.makedirs(os.path.join(box_dir, "box"))
        os.chmod(box_dir, 0o711)
        if self.isolate:
            mount_ipc(os.path.join(box_dir, "ipc"), self.uid, self.uid)
        limits = dataclasses.replace(self.limits)
        if self.budget_seconds:
            # CPU time of the whole submission: at most its wall-clock budget (per core used).
            limits.cpu_seconds = max(1, min(limits.cpu_seconds, int(self.budget_seconds * max(1, self.threads))))
        group = None
        if self.cgroups is not None:
            try:
                group = self.cgroups.new_kernel(self.slot, limits.tree(cpus=max(1, self.threads)))
            except Exception:
                self.remove_box_dir(box_dir, self.isolate)
                raise
        return BoxSpec(
            isolate=self.isolate,
            uid=self.uid,
            gid=self.uid,
            box_dir=box_dir,
            files_from=os.path.abspath(files_from),
            limits=limits,
            blocked_packages=list(self.blocked_packages),
            hide=list(self.hide),
            protect=list(self.protect),
            expose=list(self.expose),
            env=self.kernel_env(box_dir),
            cgroup=group,
        )

    @classmethod
    def remove_box(cls, spec: BoxSpec) -> None:
        """Delete a kernel's cgroup (killing what is left in it) and its host folder."""
        if spec.cgroup is not None:
            spec.cgroup.remove()
        cls.remove_box_dir(spec.box_dir, spec.isolate)

    @staticmethod
    def remove_box_dir(box_dir: str, isolate: bool) -> None:
        """Delete a kernel's host folder (its box tmpfs vanished with the kernel; the ipc tmpfs goes here)."""
        if isolate:
            try:
                umount(os.path.join(box_dir, "ipc"))
            except SandboxError:
                pass
        shutil.rmtree(box_dir, ignore_errors=True)


_CURRENT: KernelContext | None = None


def install(context: KernelContext | None) -> None:
    """Make ``context`` the one this process's Execute preprocessors use."""
    global _CURRENT
    _CURRENT = context


def current() -> KernelContext:
    """The installed context (``course grade`` workers always have one)."""
    if _CURRENT is None:
        raise RuntimeError("SandboxExecute runs only inside `course grade` workers")
    return _CURRENT


def package_dirs(names: list[str]) -> list[str]:
    """The folders the installed packages ``names`` are loaded from (real paths; none if not installed)."""
    import importlib.util

    found = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        locations = list(spec.submodule_search_locations or [])
        if not locations and spec.origin and os.path.isfile(spec.origin):
            locations = [spec.origin]
        found += [os.path.realpath(p) for p in locations if os.path.exists(p)]
    return sorted(set(found))


def exposed_paths(extra: list[str], blocked: list[str]) -> list[str]:
    """What kernels see inside hidden folders: the Python runtime and environment, caches, ``extra``.

    Only the interpreter's prefixes and its site-packages, never an
    arbitrary ``sys.path`` entry (the current folder may be a checkout of
    the course, solutions included).  The course library itself is visible
    only when it is not in ``blocked`` (see ``c.CourseGrade.blocked_packages``).
    """
    import site

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    prefixes = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)]
    paths.update(p for p in sys.path if p and any(os.path.realpath(p).startswith(x + os.sep) for x in prefixes))
    if "course" not in blocked:
        paths.update(package_dirs(["course"]))
    for name in ("HF_HOME", "TORCH_HOME", "HF_DATASETS_CACHE"):
        if os.environ.get(name):
            paths.add(os.environ[name])
    paths.update(extra)
    return sorted(os.path.realpath(p) for p in paths if os.path.exists(p))


#: Top-level folders of ``/`` that kernels see (read-only): the operating
#: system and the runtime.  Every other one (``/home``, ``/root``, ``/opt``,
#: ``/srv``, ``/work``, ``/var`` ...) is covered, and only the exposed paths
#: inside it come back: an allow-list, so another checkout of the course
#: anywhere on the machine stays out of sight.
VISIBLE_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys", "tmp")


def hidden_paths(extra: list[str]) -> list[str]:
    """Folders kernels never see: every top-level folder not on the allow-list, the system's private ones, ``extra``."""
    tops = []
    for name in os.listdir("/"):
        path = os.path.join("/", name)
        if name not in VISIBLE_TOP_LEVEL and os.path.isdir(path) and not os.path.islink(path):
            tops.append(path)
    return sorted({*tops, *HIDDEN_SYSTEM_DIRS, *extra})
