"""Runs inside the student's kernel: stop a cell's printing at a byte budget.

``print("x" * 100_000_000)`` would otherwise travel as one 100 MB message
to the grader.  The kernel is started with
``--IPKernelApp.outstream_class=course.grade.kernel_io.CappedOutStream``,
which passes at most ``COURSE_GRADE_MAX_OUTPUT`` characters per stream
per cell and then one note.  Student code can undo this (it runs in the
same process), so the grader enforces the same budget on what arrives;
this class only keeps honest-but-chatty cells cheap.

The class is built on first access (PEP 562 ``__getattr__``, the builder
cached with ``functools.cache`` like every lazily built class of
``course.grade``) so that importing this module does not import ipykernel.
"""

from __future__ import annotations

import functools
import os

NOTE = "\n[output truncated: this cell printed more than {limit} characters]\n"


@functools.cache
def _build():
    from ipykernel.iostream import OutStream

    class CappedOutStream(OutStream):
        """An ipykernel OutStream that drops text beyond a per-cell budget."""

        limit = int(os.environ.get("COURSE_GRADE_MAX_OUTPUT", "1000000"))

        def write(self, string):
            if not isinstance(string, str):
                return super().write(string)
            parent = self.parent_header if isinstance(self.parent_header, dict) else {}
            key = parent.get("msg_id")
            if key != getattr(self, "_cap_key", None):
                self._cap_key, self._cap_used, self._cap_noted = key, 0, False
            room = self.limit - self._cap_used
            if len(string) <= room:
                self._cap_used += len(string)
                return super().write(string)
            if room > 0:
                super().write(string[:room])
                self._cap_used = self.limit
            if not self._cap_noted:
                self._cap_noted = True
                super().write(NOTE.format(limit=self.limit))
            return len(string)

    return CappedOutStream


def __getattr__(name: str):
    if name == "CappedOutStream":
        return _build()
    raise AttributeError(name)
