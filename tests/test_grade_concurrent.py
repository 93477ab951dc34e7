"""Two ``course grade`` runs at once on one machine never share sandbox uids (issue 14, item 13).

Each worker's cleanup kills every process of its uid; two runs with the
same range used to kill each other's kernels (honest students got 0,
"kernel died").  Here two runs start together, configured with the same
first uid base, and every student of both comes out as if graded alone.
Sandboxed runs need root (skipped otherwise); ~1 min on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "grade"))

import classroom as cls  # noqa: E402

from course.grade import uids  # noqa: E402


def test_ranges_are_exclusive_and_released(tmp_path):
    first = uids.allocate(3_000_000_000, 4, folder=str(tmp_path))
    second = uids.allocate(3_000_000_000, 4, folder=str(tmp_path))
    assert first.base == 3_000_000_000 and second.base == 3_000_000_000 + uids.RANGE
    # Another process sees both taken (flock is per open file, so per run).
    code = f"from course.grade import uids; print(uids.allocate(3_000_000_000, 4, folder={str(tmp_path)!r}).base)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(other.stdout) == 3_000_000_000 + 2 * uids.RANGE
    first.release()
    again = uids.allocate(3_000_000_000, 4, folder=str(tmp_path))
    assert again.base == 3_000_000_000
    second.release()
    again.release()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="sandboxed runs need root")
def test_two_runs_at_once_do_not_harm_each_other(tmp_path):
    courses, expected = [], []
    for name in ("one", "two"):
        course = cls.new_course(tmp_path / name, "c.CourseGrade.uid_base = 2110500000\n")
        expected.append(cls.honest_class(course, 3))
        courses.append(course)
    env = {k: v for k, v in cls.env().items() if k != "COURSE_GRADE_UID_BASE"}
    cmd = [sys.executable, "-m", "course.grade", cls.ASSIGNMENT, "--quiet", "--jobs", "2", "--course-dir"]
    runs = [
        subprocess.Popen([*cmd, str(c)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        for c in courses
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    bases = []
    for course, want, run, out in zip(courses, expected, runs, outputs, strict=True):
        assert run.returncode == 0, out
        got = {
            p.stem: json.loads(p.read_text())["score"]
            for p in (course / "results" / cls.ASSIGNMENT / "submissions").glob("*.json")
        }
        assert got == want, out
        bases.append(json.loads((course / "results" / cls.ASSIGNMENT / "run.json").read_text())["uid_base"])
    assert len(set(bases)) == 2 and abs(bases[0] - bases[1]) >= uids.RANGE
