"""``python -m course.grade ASSIGNMENT ...``: the same as ``course grade``."""

import sys

from course.errors import CourseError
from course.grade.cli import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except CourseError as error:
        print(f"course grade: error: {error}", file=sys.stderr)
        sys.exit(2)
