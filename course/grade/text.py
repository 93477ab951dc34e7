"""Student-controlled text, made safe to print on the instructor's terminal.

A student chooses their exception class names and messages, file names in
their submission, even (through the exchange) parts of their student id.
Printed raw, an escape sequence in any of them can erase lines, move the
cursor or fake a "0 failed" on the instructor's terminal.  Everything the
grader prints that a student could have influenced goes through
:func:`safe_text`: each character that is not printable (controls,
escapes, bidirectional overrides, line and paragraph separators) is shown
as a Python escape, and the text is cut to a length.
"""

from __future__ import annotations


def safe_text(text: object, limit: int = 300) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\u202e``), cut to ``limit``."""
    text = str(text)
    if len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif char == "\n":
            out.append("\\n")
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
