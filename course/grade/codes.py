"""Named exit codes of ``course grade`` and of the processes it runs."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes, by who uses them."""

    #: ``course grade``: every submission was graded.
    OK = 0
    #: ``course grade``: some submissions could not be graded (retried by the next run).
    NOT_ALL_GRADED = 1
    #: ``course grade``: bad input (one line on stderr), nothing touched.
    BAD_INPUT = 2
    #: A kernel supervisor could not build the sandbox (before the kernel started).
    SUPERVISOR_FAILED = 70
    #: A kernel process that ended before ipykernel could run.
    KERNEL_SETUP_FAILED = 71
