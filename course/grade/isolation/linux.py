"""The thin Linux layer under the sandbox: system calls through libc, their flags, the mount table.

Python 3.11 has no ``os.unshare`` or ``mount``, so they come from libc
through ctypes; every failure becomes a :class:`SandboxError` with
errno's text.  :func:`mount_table` is the one reader of
``/proc/self/mountinfo`` (the sandbox remounts from it, the run's cleanup
unmounts from it, the cgroup code finds its hierarchies in it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from dataclasses import dataclass

# Flags from <sched.h>, <sys/mount.h>, <sys/prctl.h>.
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACES = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36


class SandboxError(RuntimeError):
    """Setting up the sandbox failed (a system call was refused)."""


# --------------------------------------------------------------------------
# libc wrappers


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    """libc with errno kept, loaded once."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _LIBC.unshare.argtypes = [ctypes.c_int]
        _LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _LIBC.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return _LIBC


def _check(result: int, what: str) -> None:
    """Raise SandboxError with errno's text when a libc call returned -1."""
    if result != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (``unshare(2)``)."""
    _check(_libc().unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """``mount(2)``; None arguments become NULL."""

    def enc(value: str | None) -> bytes | None:
        return None if value is None else os.fsencode(value)

    _check(_libc().mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def umount(target: str) -> None:
    """``umount2(target, MNT_DETACH)``: detach a mount now, free it when no longer busy."""
    _libc().umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    _check(_libc().umount2(os.fsencode(target), 2), f"umount {target}")


def sethostname(name: str) -> None:
    """``sethostname(2)`` (in a new UTS namespace: this machine's name for the processes in it)."""
    data = name.encode()
    _check(_libc().sethostname(data, len(data)), "sethostname")


def prctl(option: int, value: int) -> None:
    """``prctl(2)`` with one argument."""
    _check(_libc().prctl(option, value, 0, 0, 0), f"prctl {option}")


def die_with_parent() -> None:
    """Get SIGKILL when the parent dies; exit now if it is already gone (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


# --------------------------------------------------------------------------
# the mount table


@dataclass
class MountEntry:
    """One line of ``/proc/self/mountinfo``: what is mounted where.

    ``root`` is the folder of the file system that appears at ``point``
    (``/`` unless a sub-folder was bind-mounted, or a container's cgroup);
    ``options`` are the file system's own (super block) options.
    """

    root: str
    point: str
    fstype: str
    options: tuple[str, ...]


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The entries of a mountinfo text, parents before children.

    A line: ``id parent major:minor ROOT POINT options [tags] - TYPE source SUPER``.
    """
    entries = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        entries.append(MountEntry(_unescape(fields[3]), _unescape(fields[4]), tail[0], tuple(tail[2].split(","))))
    return entries


def mount_table(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """This mount namespace's mounts (none when it cannot be read)."""
    try:
        with open(path) as handle:
            return parse_mountinfo(handle.read())
    except OSError:
        return []
