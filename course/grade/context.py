"""What a grading worker knows about kernels: its sandbox uid, the zygote, the rules.

nbgrader builds its preprocessors itself (from class names in the
configuration), so :class:`~course.grade.execute` cannot receive these
facts as arguments; the worker installs one :class:`KernelContext` per
process and the Execute preprocessor reads it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from course.grade.sandbox import HIDDEN_SYSTEM_DIRS, BoxSpec, Limits

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
            os.chown(os.path.join(box_dir, "ipc"), self.uid, self.uid)
            os.chmod(os.path.join(box_dir, "ipc"), 0o700)
        return BoxSpec(
            isolate=self.isolate,
            uid=self.uid,
            gid=self.uid,
            box_dir=box_dir,
            files_from=os.path.abspath(files_from),
            limits=self.limits,
            hide=list(self.hide),
            protect=list(self.protect),
            expose=list(self.expose),
            env=self.kernel_env(box_dir),
        )

    @staticmethod
    def remove_box(spec: BoxSpec) -> None:
        """Delete a kernel's host folder (its tmpfs vanished with the kernel)."""
        shutil.rmtree(spec.box_dir, ignore_errors=True)


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


def exposed_paths(extra: list[str]) -> list[str]:
    """Paths kernels must keep seeing even inside hidden folders: Python, the course library, caches."""
    import course

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(course.__file__).resolve().parent)}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    for name in ("HF_HOME", "TORCH_HOME", "HF_DATASETS_CACHE"):
        if os.environ.get(name):
            paths.add(os.environ[name])
    paths.update(extra)
    return sorted(os.path.realpath(p) for p in paths if os.path.exists(p))


def hidden_paths(extra: list[str]) -> list[str]:
    """System folders kernels never see (students' and instructors' homes, /run, /srv ...)."""
    return sorted({*HIDDEN_SYSTEM_DIRS, *extra})
