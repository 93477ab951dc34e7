"""The gradebook on a real PostgreSQL server, written by parallel workers.

The test starts a throwaway server from Debian's ``postgresql`` package
(``/usr/lib/postgresql/*/bin``), listening only on a unix socket in a
private folder, and points the course at it with
``c.CourseDirectory.db_url``.  It is skipped, with the reason, when the
server binaries are not installed (CI installs them: see .ci/run).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "grade"))

import classroom as cls  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a server command as the postgres user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server with an empty ``gradebook`` database; yields its SQLAlchemy URL."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql)")
    pytest.importorskip("psycopg2")
    bindir = Path(initdb[-1]).parent
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root but there is no postgres user to run the server")
    root = Path(tempfile.mkdtemp(prefix="course-grade-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (root, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    _as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "grader", "--no-sync"])
    options = f"-k {sockets} -p {port} -c listen_addresses='' -c fsync=off"
    _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(root / "log"), "start"])
    try:
        import psycopg2

        conn = psycopg2.connect(dbname="postgres", user="grader", host=str(sockets), port=port)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE gradebook")
        conn.close()
        yield f"postgresql+psycopg2://grader@/gradebook?host={sockets}&port={port}"
    finally:
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def test_parallel_grading_into_postgresql(tmp_path, postgres_url):
    from nbgrader.api import Gradebook

    course = cls.new_course(tmp_path, f"c.CourseDirectory.db_url = {postgres_url!r}\n")
    assert not (course / "gradebook.db").exists()
    expected = cls.honest_class(course, 6)
    cls.submit_answers(course, "crasher", {**cls.CORRECT, "pick_device": cls.PICK_DEVICE + "import os\nos._exit(1)\n"})
    expected["crasher"] = 3.0
    args = ["--jobs", "2"] + ([] if os.geteuid() == 0 else ["--no-sandbox"])
    proc = cls.run_grade(course, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (course / "gradebook.db").exists()
    with Gradebook(postgres_url, "course") as gb:
        scores = {s.student.id: s.score for s in gb.find_assignment("ps_fixture").submissions}
        assert scores == expected
        crasher = gb.find_submission_notebook("ps_fixture", "ps_fixture", "crasher")
        assert {g.name: g.score for g in crasher.grades}["test_relu_hidden"] == 2
    rows = (course / "results" / "ps_fixture" / "grades.csv").read_text().splitlines()
    assert len(rows) == 1 + len(expected)

    # The same server through --db, regrading everything: still consistent.
    forced = cls.run_grade(course, *args, "--force", "--db", postgres_url)
    assert forced.returncode == 0 and f"graded {len(expected)} submission(s)" in forced.stdout
    with Gradebook(postgres_url, "course") as gb:
        assert len(gb.find_assignment("ps_fixture").submissions) == len(expected)
