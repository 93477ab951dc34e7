"""The one exception type the course raises for problems a user can fix.

Every ``CourseError`` carries a single line that says what went wrong and how
to fix it.  The ``course`` command prints that line and exits non-zero instead
of showing a traceback; notebooks simply let it propagate.
"""


class CourseError(Exception):
    """A user-facing error: the message is one line naming the problem and the fix."""
