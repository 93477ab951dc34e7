"""A hostile class, graded in ONE ``course grade`` run with two workers.

Every submission below attacks the grader, the sandbox or the scoring in
one way; each has its expected outcome asserted, and the honest students
graded in the same run (by the same workers, before and after the
attackers) must come out exactly as if alone.

Needs root and Linux namespaces (the sandbox); skipped with the reason
otherwise.  Cost: one run, ~1-2 min on 2 cores (two cells time out on
purpose at --timeout 10).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import threading
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "grade"))

import classroom as cls  # noqa: E402

pytestmark = pytest.mark.slow

TIMEOUT = 10
BUDGET = 25  # seconds all cells of one submission may run together


def _sandbox_missing() -> str | None:
    from course.grade.isolation.sandbox import unavailable_reason

    return unavailable_reason()


LIAR = """
class Liar:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __float__(self): return 1.0
    def __getattr__(self, name): return Liar()
    def __call__(self, *args, **kwargs): return Liar()

def relu(x):
    return Liar()
"""


#: Four forked children each fill 900 MiB and hold it for a while: 3.6 GB
#: from a kernel limited to 1024 MiB per process (memory_mb) and 2048 MiB
#: for its whole tree (memory_mb + disk_mb).  Prints how many held to the end.
FORK_MEMORY = """
import os, time
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = b"x" * (900 * 2**20)
        time.sleep(4)
        os._exit(0)
    kids.append(pid)
held = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in kids)
print("children that held 900 MiB:", held)
"""

#: Three children spin forever and outlive the cell; the next cells take their time.
SPINNERS = """
import os
for _ in range(3):
    if os.fork() == 0:
        while True:
            pass
"""


def snoop_code(course: Path) -> str:
    """Try to read the instructor's files and write the gradebook; print LEAK on success."""
    return (
        f"""
import os, sqlite3
COURSE = {str(course)!r}
for path in ["../source/ps_fixture/ps_fixture.ipynb", "../../source/ps_fixture/ps_fixture.ipynb",
             "../../../source/ps_fixture/ps_fixture.ipynb", COURSE + "/source/ps_fixture/ps_fixture.ipynb",
             COURSE + "/gradebook.db", COURSE + "/submitted/honest/ps_fixture/ps_fixture.ipynb",
             COURSE + "/release/ps_fixture/ps_fixture.ipynb", COURSE + "/nbgrader_config.py",
             "/root/.bashrc", "/etc/shadow"]:
    try:
        with open(path, "rb") as handle:
            handle.read(16)
        print("LEAK read", path)
    except Exception as error:
        print("blocked read", path, type(error).__name__)
for path in [COURSE + "/gradebook.db", COURSE + "/source/ps_fixture/ps_fixture.ipynb",
             COURSE + "/results/ps_fixture/honest.json", "/usr/evil.txt", "/etc/evil.txt", "/var/tmp/../evil.txt"]:
    try:
        with open(path, "ab") as handle:
            handle.write(b"x")
        print("LEAK write", path)
    except Exception as error:
        print("blocked write", path, type(error).__name__)
try:
    db = sqlite3.connect(COURSE + "/gradebook.db")
    db.execute("UPDATE grade SET auto_score = 100")
    db.commit()
    print("LEAK sqlite")
except Exception as error:
    print("blocked sqlite", type(error).__name__)
try:
    listing = os.listdir(COURSE)
    print("LEAK listing" if listing else "empty listing", listing)
except Exception as error:
    print("blocked listing", type(error).__name__)
with open("mine.txt", "w") as handle:
    handle.write("my own working copy is writable")
print("own write ok", open("mine.txt").read())
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print("processes visible", len(pids), "uid", os.getuid())
"""
        + cls.RELU
    )


def network_code(port: int) -> str:
    """Try to reach a server the test runs on this machine, and the internet."""
    return (
        f"""
import socket
for host, port in [("127.0.0.1", {port}), ("localhost", {port}), ("1.1.1.1", 53)]:
    try:
        conn = socket.create_connection((host, port), timeout=3)
        conn.sendall(b"LEAK")
        print("CONNECTED", host)
    except Exception as error:
        print("blocked", host, type(error).__name__)
"""
        + cls.RELU
    )


DISPLAYHOOK = """
import sys

def relu(x):
    sys.displayhook("looks fine")  # nbgrader's determine_grade stopped at this result
    return x
"""

READ_NOTEBOOKS = """
import glob, os
found = glob.glob("**/*.ipynb", recursive=True)
for top in ["/tmp", "/run", "/work", "/home", "/root", "/srv", "/opt", "/var"]:
    found += glob.glob(top + "/*/*.ipynb") + glob.glob(top + "/*/*/*.ipynb") + glob.glob(top + "/*/*/*/*.ipynb")
print("NOTEBOOKS", found)
print("CMDLINE", open("/proc/1/cmdline", "rb").read().replace(b"\\0", b" ").decode())
"""

ECHO_TESTS = """
get_ipython().events.register("pre_run_cell", lambda info: print("ECHO", info.raw_cell))
print("HISTORY", "\\n".join(In))
"""

FAKE_TIMEOUT = """
class CellTimeoutError(Exception):
    pass

def pick_device(prefer_gpu=True):
    raise CellTimeoutError("\\x1b[2K\\x1b[1A\\rgraded 99 submission(s); 0 failed")
"""

TRANSFORMER = """
get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"] if "assert" in "".join(lines) else lines)
"""

CUSTOM_EXC = """
get_ipython().set_custom_exc((Exception,), lambda shell, etype, value, tb, tb_offset=None: None)
"""


MANY_ERRORS = """
try:
    1 / 0
except ZeroDivisionError:
    for _ in range(300):
        get_ipython().showtraceback()
"""

DISPLAY_UPDATES = """
handle = display("start", display_id=True)
for i in range(60):
    handle.update("y" * 2_000_000)
"""

FILL_IPC = """
import os
from ipykernel.kernelapp import IPKernelApp
ipc = os.path.dirname(IPKernelApp.instance().connection_file)
written = files = 0
try:
    with open(os.path.join(ipc, "fill.bin"), "wb") as handle:
        for _ in range(200):
            handle.write(b"x" * 2**20)
            handle.flush()
            written += 2**20
except OSError as error:
    print("ipc write stopped", type(error).__name__)
try:
    for i in range(5000):
        open(os.path.join(ipc, f"f{i}"), "w").close()
        files += 1
except OSError as error:
    print("ipc files stopped", type(error).__name__)
print("IPC", written, files)
"""


def flood_cells(nb) -> None:
    """Twenty extra cells after the setup, each printing just under the per-cell cap."""
    at = cls.cell_index(nb, "relu")
    for _ in range(20):
        nb.cells.insert(at, nbformat.v4.new_code_cell("print('z' * 990_000)"))


def many_cells(nb) -> None:
    """More code cells than a submission may have."""
    nb.cells += [nbformat.v4.new_code_cell("") for _ in range(600)]


def sleepy(seconds: int, source: str) -> str:
    return f"import time\ntime.sleep({seconds})\n" + source


def log_swap_code(kind: str) -> str:
    """Replace the kernel's own log with a link to a root-only file or a FIFO, then exit with the supervisor's code."""
    make = "os.symlink('/etc/shadow', log)" if kind == "link" else "os.mkfifo(log)"
    return f"""
import os
from ipykernel.kernelapp import IPKernelApp
log = os.path.join(os.path.dirname(IPKernelApp.instance().connection_file), "kernel.log")
os.unlink(log)
{make}
os._exit(70)
"""


def blocked_import_code(course_src: str, other_checkout: str) -> str:
    """Reach the course library (and a checkout's solutions) by every route; print what worked."""
    return (
        f"""
import importlib, sys
for attempt in ["import course.pipelines", "importlib.import_module('cour' + 'se.train')",
                "__import__('course').pipelines", "sys.modules['course'].__path__"]:
    try:
        exec(attempt)
        print("REACHED", attempt)
    except (ImportError, AttributeError) as error:
        print("blocked import", type(error).__name__)
print("in sys.modules:", sorted(m + ": " + type(sys.modules[m]).__name__ for m in sys.modules
                                if m == "course" or m.startswith("course.")))
for path in [{course_src!r}, {other_checkout!r}]:
    try:
        exec(compile(open(path).read(), path, "exec"), {{}})
        print("REACHED", path)
    except Exception as error:
        print("blocked file", type(error).__name__)
"""
        + cls.RELU
    )


class Server:
    """A TCP server on 127.0.0.1 that records every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.hits: list[bytes] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(1)
            try:
                self.hits.append(conn.recv(100))
            except OSError:
                self.hits.append(b"")
            conn.close()

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Build the class, run `course grade` once, return what came out."""
    reason = _sandbox_missing()
    if reason:
        pytest.skip(f"sandbox unavailable: {reason}")
    config = f"c.CourseGrade.memory_mb = 1024\nc.CourseGrade.submission_seconds = {BUDGET}\n"
    course = cls.new_course(tmp_path_factory.mktemp("hostile"), config)
    server = Server()
    submit = cls.submit_answers
    correct = cls.CORRECT
    submit(course, "honest", correct)
    submit(course, "partial", {**correct, "relu": cls.RELU_WRONG})
    submit(course, "warner", {**correct, "normalize": cls.NORMALIZE_WITH_WARNING})
    submit(course, "stub", {})
    endless = "def pick_device(prefer_gpu=True):\n    while True:\n        pass\n"
    submit(course, "loop", {**correct, "pick_device": endless})
    submit(
        course,
        "c_loop",
        {
            **correct,
            "normalize": (
                "import itertools\n"
                "def normalize(v):\n"
                "    return sum(itertools.repeat(1, 10**13))  # C code: no interrupt\n"
            ),
        },
    )
    submit(course, "fork_bomb", {**correct, "pick_device": "import os\nwhile True:\n    os.fork()\n" + cls.PICK_DEVICE})
    submit(
        course,
        "memory_bomb",
        {**correct, "normalize": ("hog = []\nwhile True:\n    hog.append(b'x' * (64 * 2**20))\n" + cls.NORMALIZE)},
    )
    submit(course, "big_output", {**correct, "relu": "print('x' * 100_000_000)\n" + cls.RELU})
    submit(course, "os_exit", {**correct, "pick_device": cls.PICK_DEVICE + "import os\nos._exit(3)\n"})
    submit(course, "segfault", {**correct, "pick_device": cls.PICK_DEVICE + "import ctypes\nctypes.string_at(0)\n"})
    submit(course, "sys_exit", {**correct, "pick_device": "import sys\nsys.exit(0)\n"})
    submit(course, "snoop", {**correct, "relu": snoop_code(course)})
    submit(course, "network", {**correct, "relu": network_code(server.port)})
    submit(
        course,
        "eq_true",
        {
            "relu": LIAR,
            "pick_device": "def pick_device(prefer_gpu=True):\n    return Liar()\n",
            "normalize": "def normalize(v):\n    return Liar()\n",
        },
    )
    submit(course, "deleted_tests", correct, edit=cls.delete_cells("test_relu_hidden", "test_normalize"))
    submit(
        course,
        "edited_test",
        {**correct, "relu": cls.RELU_WRONG},
        edit=cls.replace_source("test_relu", "assert True  # all good"),
    )
    submit(course, "changed_ids", correct, edit=cls.change_metadata)
    submit(course, "displayhook", {**correct, "relu": DISPLAYHOOK})
    submit(course, "reads_notebook", {**correct, "relu": READ_NOTEBOOKS + cls.RELU})
    submit(course, "echo_tests", {**correct, "normalize": ECHO_TESTS + cls.NORMALIZE})
    submit(course, "fake_timeout", {**correct, "pick_device": FAKE_TIMEOUT})
    submit(course, "many_errors", {**correct, "relu": MANY_ERRORS + cls.RELU})
    submit(course, "display_updates", {**correct, "relu": DISPLAY_UPDATES + cls.RELU})
    submit(course, "flood_cells", correct, edit=flood_cells)
    submit(course, "fill_ipc", {**correct, "relu": FILL_IPC + cls.RELU})
    submit(course, "many_cells", correct, edit=many_cells)
    slow = {name: sleepy(9, source) for name, source in correct.items()}
    submit(course, "sleepy", slow)
    submit(course, "transformer", {"relu": TRANSFORMER + cls.RELU_WRONG})
    submit(course, "custom_exc", {"relu": CUSTOM_EXC + cls.RELU_WRONG})
    submit(course, "fork_memory", {**correct, "relu": FORK_MEMORY + cls.RELU})
    submit(
        course,
        "spinners",
        {"relu": SPINNERS + cls.RELU, **{k: sleepy(3, correct[k]) for k in ("pick_device", "normalize")}},
    )
    submit(course, "log_link", {**correct, "pick_device": log_swap_code("link")})
    submit(course, "log_fifo", {**correct, "pick_device": log_swap_code("fifo")})
    import course as course_package

    course_src = str(Path(course_package.__file__).resolve().parent / "pipelines.py")
    other = str(cls.REPO / "grading" / "source" / "ps2_pipelines" / "ps2_pipelines.ipynb")
    submit(course, "blocked_import", {**correct, "relu": blocked_import_code(course_src, other)})
    honest_nb = course / "submitted" / "honest" / "ps_fixture" / "ps_fixture.ipynb"
    for student, target in [
        ("link_other", honest_nb),
        ("link_source", course / "source" / "ps_fixture" / "ps_fixture.ipynb"),
    ]:
        folder = course / "submitted" / student / "ps_fixture"
        folder.mkdir(parents=True)
        (folder / "ps_fixture.ipynb").symlink_to(target)
    fifo = cls.submit_answers(course, "fifo", correct).parent / "data.bin"
    os.mkfifo(fifo)
    (course / "submitted" / "link_folder").symlink_to(course / "submitted" / "honest")
    cls.submit_raw(course, "not_json", b"this is not a notebook {")
    cls.submit_raw(course, "wrong_nbformat", cls.wrong_nbformat(course))

    source_nb = course / "source" / "ps_fixture" / "ps_fixture.ipynb"
    source_before = source_nb.read_bytes()
    proc = cls.run_grade(course, "--jobs", "2", "--timeout", str(TIMEOUT))
    server.close()
    again = cls.run_grade(course, "--jobs", "2", "--timeout", str(TIMEOUT))
    results = {}
    for path in (course / "results" / "ps_fixture" / "submissions").glob("*.json"):
        results[path.stem] = json.loads(path.read_text())
    return {
        "course": course,
        "proc": proc,
        "again": again,
        "results": results,
        "server_hits": server.hits,
        "source_unchanged": source_nb.read_bytes() == source_before,
    }


def cells(result: dict) -> dict[str, dict]:
    """grade_id -> cell result of the (only) notebook."""
    return {c["grade_id"]: c for c in result["notebooks"][0]["cells"]}


def outputs_text(course: Path, student: str, grade_id: str) -> str:
    """All text output of one cell of a student's autograded notebook."""
    nb = nbformat.read(course / "autograded" / student / "ps_fixture" / "ps_fixture.ipynb", as_version=4)
    cell = nb.cells[cls.cell_index(nb, grade_id)]
    return "".join(o.get("text", "") + o.get("ename", "") + o.get("evalue", "") for o in cell.outputs)


def test_run_completes_and_grades_everyone(hostile):
    proc = hostile["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(hostile["results"]) == 41
    assert all(r["status"] == "graded" and r["max_score"] == cls.MAX_SCORE for r in hostile["results"].values())


@pytest.mark.parametrize(
    "student, score",
    [
        ("honest", 7),
        ("partial", 4),
        ("warner", 7),
        ("stub", 1),
        ("loop", 6),
        ("c_loop", 4),
        ("memory_bomb", 5),
        ("big_output", 7),
        ("os_exit", 3),
        ("segfault", 3),
        ("sys_exit", 6),
        ("snoop", 7),
        ("network", 7),
        ("eq_true", 1),
        ("deleted_tests", 7),
        ("edited_test", 4),
        ("changed_ids", 7),
        ("not_json", 0),
        ("wrong_nbformat", 0),
        ("displayhook", 4),
        ("reads_notebook", 7),
        ("echo_tests", 7),
        ("fake_timeout", 6),
        ("log_link", 3),
        ("log_fifo", 3),
        ("blocked_import", 7),
        ("link_other", 0),
        ("link_source", 0),
        ("fifo", 0),
        ("link_folder", 0),
        ("many_errors", 7),
        ("display_updates", 7),
        ("flood_cells", 7),
        ("fill_ipc", 7),
        ("many_cells", 0),
        ("sleepy", 4),
        ("transformer", 0),
        ("custom_exc", 0),
        ("fork_memory", 7),
        ("spinners", 7),
    ],
)
def test_score(hostile, student, score):
    assert hostile["results"][student]["score"] == score


def test_csv_matches_results(hostile):
    lines = (hostile["course"] / "results" / "ps_fixture" / "grades.csv").read_text().splitlines()
    assert lines[0] == "student_id,total,max," + ",".join(cls.TESTS) + ",raw_score,late_penalty,note"
    rows = {line.split(",")[0]: line.split(",") for line in lines[1:]}
    assert set(rows) == set(hostile["results"])
    for student, result in hostile["results"].items():
        assert float(rows[student][1]) == result["score"]
        assert float(rows[student][2]) == cls.MAX_SCORE


def test_honest_students_are_untouched_by_the_others(hostile):
    for student in ("honest", "warner"):
        result = hostile["results"][student]
        assert result["tampering"] == []
        assert all(c["status"] == "passed" for c in cells(result).values())


def test_stderr_warning_does_not_zero_a_correct_answer(hostile):
    text = outputs_text(hostile["course"], "warner", "test_normalize")
    assert "UserWarning" in text  # the warning is still shown
    assert cells(hostile["results"]["warner"])["test_normalize"]["score"] == 2


def test_python_infinite_loop_times_out_and_grading_continues(hostile):
    c = cells(hostile["results"]["loop"])
    assert c["test_pick_device"]["status"] == "timeout"
    assert f"{TIMEOUT}" in c["test_pick_device"]["message"]
    assert c["test_normalize"]["status"] == "passed" and c["test_labels"]["status"] == "passed"


def test_loop_inside_c_code_is_killed_and_the_rest_marked(hostile):
    c = cells(hostile["results"]["c_loop"])
    assert c["test_normalize"]["status"] == "timeout"
    assert "did not stop when interrupted" in c["test_normalize"]["message"]
    assert c["test_labels"]["status"] == "not-run"
    assert c["test_relu"]["status"] == c["test_pick_device"]["status"] == "passed"


def test_fork_bomb_is_bounded(hostile):
    """The process limit stops the loop: the bomb's own cell fails, and nothing outlives the run.

    Whether the kernel survives its forked copies depends on timing: when
    the limit stops the loop first (a quiet machine), the later honest cells
    keep their points (score 6); when the copies starve the kernel, they are
    lost with it (score 3).  Never more, and never the bomb's own test.
    """
    c = cells(hostile["results"]["fork_bomb"])
    assert c["test_relu"]["status"] == c["test_relu_hidden"]["status"] == "passed"
    assert c["test_pick_device"]["status"] in ("timeout", "kernel-died", "not-run", "failed", "budget")
    assert hostile["results"]["fork_bomb"]["score"] in (3, 6)
    from course.grade.isolation.sandbox import processes_of

    run = json.loads((hostile["course"] / "results" / "ps_fixture" / "run.json").read_text())
    base = run["uid_base"]
    assert not [p for uid in range(base, base + 4) for p in processes_of(uid)], "sandbox outlived the run"


def test_memory_bomb_hits_the_limit_not_the_machine(hostile):
    text = outputs_text(hostile["course"], "memory_bomb", "normalize")
    assert "MemoryError" in text
    c = cells(hostile["results"]["memory_bomb"])
    assert c["test_normalize"]["status"] == "failed" and c["test_labels"]["status"] == "passed"


def test_forked_children_share_the_kernels_memory_limit(hostile):
    """Four children x 900 MiB from a kernel whose tree may use 2048 MiB: the tree's limit holds.

    Each child alone is within the per-process limit (RLIMIT_DATA 1024 MiB);
    together they are not, so the out-of-memory killer of the kernel's own
    cgroup ends some of them (never the kernel, never another student),
    and the instructor sees the tree's peak and the kills.
    """
    text = outputs_text(hostile["course"], "fork_memory", "relu")
    held = int(text.split("children that held 900 MiB:")[1].split()[0])
    assert held <= 2, text
    nb = hostile["results"]["fork_memory"]["notebooks"][0]
    used = nb["resources"]
    assert used["memory_limit_mb"] == 1024 + 1024
    assert used["oom_kills"] >= 2
    assert 0.9 * used["memory_limit_mb"] <= used["memory_peak_mb"] <= used["memory_limit_mb"]  # reached, held
    assert "memory limit of 2048 MiB" in hostile["proc"].stdout
    honest = hostile["results"]["honest"]["notebooks"][0]["resources"]
    assert honest["oom_kills"] == 0 and honest["memory_peak_mb"] < 1024, honest


def test_spinning_children_count_against_the_kernels_cpu(hostile):
    """Children that spin across cells share the kernel's CPU quota, and their CPU time is the submission's."""
    result = hostile["results"]["spinners"]
    used = result["notebooks"][0]["resources"]
    seconds = result["timing"]["kernel_start"] + result["timing"]["execute"]
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # --jobs 2
    assert used["cpu_seconds"] is not None
    assert used["cpu_seconds"] <= threads * seconds * 1.1 + 1, (used, seconds)
    assert used["cpu_seconds"] >= 0.25 * seconds, (used, seconds)  # they did spin, within the quota
    assert used["cpu_throttled"] > 0  # and the quota, not a busy machine, held them back
    run = json.loads((hostile["course"] / "results" / "ps_fixture" / "run.json").read_text())
    assert run["kernel_limits"].startswith("per process tree (cgroup v")
    assert run["kernel_limits"] in hostile["proc"].stdout


def test_huge_single_line_output_is_cut(hostile):
    nb_path = hostile["course"] / "autograded" / "big_output" / "ps_fixture" / "ps_fixture.ipynb"
    assert nb_path.stat().st_size < 3_000_000
    assert "output truncated" in outputs_text(hostile["course"], "big_output", "relu")


@pytest.mark.parametrize("student, reason", [("os_exit", "status 3"), ("segfault", "SIGSEGV")])
def test_kernel_death_keeps_earlier_points(hostile, student, reason):
    c = cells(hostile["results"][student])
    assert c["test_relu"]["status"] == c["test_relu_hidden"]["status"] == "passed"
    for grade_id in ("test_pick_device", "test_normalize", "test_labels"):
        assert c[grade_id]["status"] == "not-run"
        assert reason in c[grade_id]["message"]


def test_sys_exit_does_not_stop_grading(hostile):
    c = cells(hostile["results"]["sys_exit"])
    assert c["test_pick_device"]["status"] == "failed"
    assert c["test_normalize"]["status"] == "passed"


def test_snooping_student_sees_nothing_and_writes_nothing(hostile):
    text = outputs_text(hostile["course"], "snoop", "relu")
    assert "LEAK" not in text, text
    assert text.count("blocked read") == 10 and text.count("blocked write") == 6, text
    assert "blocked sqlite" in text and "own write ok" in text
    visible = int(text.split("processes visible")[1].split()[0])
    assert visible < 20  # its own pid namespace
    assert hostile["source_unchanged"]
    db = sqlite3.connect(hostile["course"] / "gradebook.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT max(auto_score) FROM grade").fetchone()[0] <= 2


def test_network_is_unreachable(hostile):
    text = outputs_text(hostile["course"], "network", "relu")
    assert "CONNECTED" not in text and text.count("blocked") == 3, text
    assert hostile["server_hits"] == []


def test_equal_to_everything_object_fails(hostile):
    c = cells(hostile["results"]["eq_true"])
    assert [g for g, cell in c.items() if cell["status"] == "passed"] == ["test_labels"]


def kinds(result: dict) -> set[tuple[str, str]]:
    return {(f["kind"], f["grade_id"]) for f in result["tampering"]}


def test_deleted_tests_are_reported_and_still_run(hostile):
    result = hostile["results"]["deleted_tests"]
    assert kinds(result) == {("deleted", "test_relu_hidden"), ("deleted", "test_normalize")}
    assert all(c["status"] == "passed" for c in cells(result).values())


def test_edited_test_is_reported_and_the_instructors_copy_runs(hostile):
    result = hostile["results"]["edited_test"]
    assert kinds(result) == {("edited", "test_relu")}
    assert cells(result)["test_relu"]["status"] == "failed"


def test_changed_ids_and_metadata_are_reported(hostile):
    found = kinds(hostile["results"]["changed_ids"])
    assert {
        ("unknown-id", "my_own_test"),
        ("deleted", "test_pick_device"),
        ("metadata", "test_normalize"),
        ("metadata", "test_labels"),
        ("duplicated", "test_relu"),
    } <= found


def test_no_tampering_reported_for_honest_work(hostile):
    attackers = {"deleted_tests", "edited_test", "changed_ids", "blocked_import", "transformer", "custom_exc"}
    for student, result in hostile["results"].items():
        if student not in attackers:
            assert result["tampering"] == [], student


@pytest.mark.parametrize("student, words", [("not_json", "not valid JSON"), ("wrong_nbformat", "version is 5")])
def test_unreadable_files_score_zero_with_the_reason(hostile, student, words):
    nb = hostile["results"][student]["notebooks"][0]
    assert nb["status"] == "rejected" and words in nb["reason"]
    page = hostile["course"] / "feedback" / student / "ps_fixture" / "ps_fixture.html"
    assert words in page.read_text()


def page_text(path: Path) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.parts = []

        def handle_data(self, data):
            self.parts.append(data)

    parser = Text()
    parser.feed(path.read_text())
    return " ".join("".join(parser.parts).split())


def test_feedback_hides_hidden_tests(hostile):
    from course.grade.feedback import hidden_lines

    source = nbformat.read(hostile["course"] / "source" / "ps_fixture" / "ps_fixture.ipynb", as_version=4)
    secret = [" ".join(line.split()) for c in source.cells for line in hidden_lines(c.source)]
    assert len(secret) == 6
    for student in ("honest", "partial", "eq_true"):
        text = page_text(hostile["course"] / "feedback" / student / "ps_fixture" / "ps_fixture.html")
        assert "relu must return a torch.Tensor, not" in text  # visible tests are shown
        assert not [line for line in secret if line in text], student
        assert "BEGIN HIDDEN TESTS" not in text
    partial = page_text(hostile["course"] / "feedback" / "partial" / "ps_fixture" / "ps_fixture.html")
    assert "relu is wrong on a grid" in partial  # the failing hidden test's message is feedback
    assert "hidden tests are not shown" in partial


# -- issue 14: the attacks of the second review ------------------------------


def test_displayed_result_does_not_pass_a_failing_test(hostile):
    c = cells(hostile["results"]["displayhook"])
    assert c["test_relu"]["status"] == c["test_relu_hidden"]["status"] == "failed"
    assert c["test_relu"]["score"] == c["test_relu_hidden"]["score"] == 0


def secret_lines(course: Path) -> list[str]:
    from course.grade.feedback import hidden_lines

    source = nbformat.read(course / "source" / "ps_fixture" / "ps_fixture.ipynb", as_version=4)
    return [" ".join(line.split()) for c in source.cells for line in hidden_lines(c.source)]


def test_hidden_tests_never_reach_the_kernel_or_the_feedback(hostile):
    course = hostile["course"]
    text = outputs_text(course, "reads_notebook", "relu")
    assert "NOTEBOOKS []" in text, text  # no notebook in the working folder, none anywhere visible
    cmdline = text.split("CMDLINE", 1)[1]
    assert "torch" not in cmdline and "labels" not in cmdline, cmdline  # no preload list from the source
    history = outputs_text(course, "echo_tests", "normalize")
    assert "HISTORY" in history and "BEGIN HIDDEN TESTS" not in history
    assert not [line for line in secret_lines(course) if line in " ".join(history.split())]
    echoed = outputs_text(course, "echo_tests", "test_labels")
    assert "ECHO" in echoed  # the hook ran...
    for student in ("echo_tests", "reads_notebook"):
        page = page_text(course / "feedback" / student / "ps_fixture" / "ps_fixture.html")
        assert not [line for line in secret_lines(course) if line in page], student  # ...and leaked nothing


def test_forged_exception_names_get_no_status_and_no_terminal_control(hostile):
    c = cells(hostile["results"]["fake_timeout"])
    assert c["test_pick_device"]["status"] == "failed"
    out = hostile["proc"].stdout + hostile["proc"].stderr
    assert "\x1b" not in out and "\r" not in out
    assert "graded 99" not in "".join(line for line in out.splitlines() if not line.startswith("  "))


def test_a_kernel_dead_in_a_solution_cell_is_listed_in_the_summary(hostile):
    line = next(line for line in hostile["proc"].stdout.splitlines() if line.startswith("  os_exit:"))
    assert "pick_device: the kernel died while running this cell" in line and "status 3" in line


@pytest.mark.parametrize("student", ["log_link", "log_fifo"])
def test_a_swapped_kernel_log_is_never_followed(hostile, student):
    result = hostile["results"][student]
    assert result["status"] == "graded"
    c = cells(result)
    assert c["test_pick_device"]["status"] == "not-run" and "status 70" in c["test_pick_device"]["message"]
    log = hostile["course"] / "results" / "ps_fixture" / "grade.log"
    shadow_start = Path("/etc/shadow").read_text().split(":", 1)[0] + ":" if Path("/etc/shadow").exists() else "root:"
    for text in (log.read_text(errors="replace"), hostile["proc"].stdout):
        assert shadow_start + "$" not in text and "root:*:" not in text and "root:!" not in text


def test_results_are_private(hostile):
    folder = hostile["course"] / "results" / "ps_fixture"
    assert folder.stat().st_mode & 0o777 == 0o700
    for name in ("grade.log", "grades.csv", "run.json", "submissions/honest.json"):
        assert (folder / name).stat().st_mode & 0o077 == 0, name


def test_the_course_package_is_unreachable_and_each_attempt_reported(hostile):
    text = outputs_text(hostile["course"], "blocked_import", "relu")
    assert "REACHED" not in text, text
    assert text.count("blocked import") == 4 and text.count("blocked file") == 2, text
    assert "in sys.modules: ['course: Tripwire']" in text  # the reporting stand-in, nothing of the package
    tampering = hostile["results"]["blocked_import"]["tampering"]
    found = [f["detail"] for f in tampering if f["kind"] == "blocked-import"]
    assert len(found) == 1 and found[0].startswith("tried to import course ("), found
    read = [f["detail"] for f in tampering if f["kind"] == "blocked-read"]
    assert len(read) == 1 and "/course/" in read[0] and read[0].startswith("tried to read "), read


@pytest.mark.parametrize(
    "student, words",
    [
        ("link_other", "symbolic link"),
        ("link_source", "symbolic link"),
        ("fifo", "FIFO"),
        ("link_folder", "symbolic link"),
    ],
)
def test_special_files_in_submitted_are_rejected_unread(hostile, student, words):
    result = hostile["results"][student]
    nb = result["notebooks"][0]
    assert nb["status"] == "rejected" and words in nb["reason"], nb
    assert result["score"] == 0
    assert not (hostile["course"] / "autograded" / student).exists()


def test_a_second_run_regrades_nothing(hostile):
    again = hostile["again"]
    assert again.returncode == 0, again.stdout + again.stderr
    assert "graded 0 submission(s)" in again.stdout and "skipped 41 already graded" in again.stdout


@pytest.mark.parametrize("student, what", [("transformer", "input transformers"), ("custom_exc", "custom exception")])
def test_a_subverted_kernel_scores_nothing_and_is_named(hostile, student, what):
    result = hostile["results"][student]
    c = cells(result)
    assert all(cell["score"] == 0 for cell in c.values()), c
    assert c["test_relu"]["status"] == "tampered" and what in c["test_relu"]["message"]
    found = [f for f in result["tampering"] if f["kind"] == "kernel"]
    assert found and what in found[0]["detail"] and found[0]["grade_id"] == "test_relu"


@pytest.mark.parametrize("student", ["big_output", "many_errors", "display_updates", "flood_cells"])
def test_everything_stored_per_notebook_is_capped(hostile, student):
    nb_path = hostile["course"] / "autograded" / student / "ps_fixture" / "ps_fixture.ipynb"
    assert nb_path.stat().st_size < 10_000_000, nb_path.stat().st_size
    page = hostile["course"] / "feedback" / student / "ps_fixture" / "ps_fixture.html"
    assert page.stat().st_size < 12_000_000


def test_the_ipc_folder_has_its_own_small_quota(hostile):
    text = outputs_text(hostile["course"], "fill_ipc", "relu")
    written, files = (int(x) for x in text.split("IPC", 1)[1].split()[:2])
    assert written <= 4 * 2**20 and files < 64, text


def test_cell_count_and_time_budget(hostile):
    nb = hostile["results"]["many_cells"]["notebooks"][0]
    assert nb["status"] == "rejected" and "more than the 500 a submission may have" in nb["reason"]
    c = cells(hostile["results"]["sleepy"])
    assert c["test_pick_device"]["status"] == "passed"
    assert c["test_normalize"]["status"] == "budget" and f"budget of {BUDGET} s" in c["test_normalize"]["message"]
    assert c["test_labels"]["status"] == "not-run"
