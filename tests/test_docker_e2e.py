"""The deployment, for real: build the images and run a class through JupyterHub in a real Docker engine.

What tests/test_deploy.py checks piece by piece without an engine, this runs
end to end, on a machine without any image registry (CI included):

1. a private ``dockerd`` (own socket and data root, no bridge, no iptables;
   tests/docker_e2e/docker_engine.py), stopped and removed afterwards, failing or not;
2. stand-in bases: Debian bookworm from debootstrap, a CPU PyTorch at the
   real image's /opt/conda, and a JupyterHub 5.5.0 base from Debian, npm and PyPI;
3. ``docker/Dockerfile`` built unchanged with ``--build-arg BASE_IMAGE=<stand-in>``
   (no model prefetch: no hub here; no smoke run: CI runs the notebooks
   elsewhere), and ``docker/jupyterhub/Dockerfile`` on the hub stand-in;
4. the course image alone: the doctor, the HEALTHCHECK, /lab, the user, the
   Hugging Face cache, the bundled model with no network at all;
5. the hub (DockerSpawner on the host network) with the formgrader service:
   a student and an instructor log in through the REST API and spawn servers;
   the instructor releases ps0_environment, the student fetches it, answers
   two of its three questions and submits, the instructor collects and runs
   ``course grade`` with the sandbox on in their own container, releases the
   feedback, the student fetches it; the isolation the docs promise holds.

Everything listens on 127.0.0.1 and every container uses the host network.
Each image is built once per run and shared by every check. Timings of
each phase go to ``$COURSE_ARTIFACTS/docker-e2e/timings.json`` (default
``artifacts/``), with the build logs.

Needs root, Debian's docker.io and debootstrap (``scripts/setup.sh --test``
installs them), and the package registries. Without them it FAILS, on
purpose: ``COURSE_SKIP_DOCKER_E2E=1`` is the explicit opt-out.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "docker_e2e"))
from docker_engine import JUPYTERHUB_STANDIN, MINBASE, PYTORCH_STANDIN, Engine, EngineError, finish  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
E2E = REPO / "tests" / "docker_e2e"
COURSE_IMAGE = "course-e2e/course:test"
HUB_IMAGE = "course-e2e/hub:test"
ASSIGNMENT = "ps0_environment"
UID_BASE = "2180000000"  # sandbox uids of this test's grading run (distinct from other suites')
CLASS_PASSWORD = "class-" + secrets.token_hex(8)
ADMIN_PASSWORD = secrets.token_hex(20)
FORMGRADER_TOKEN = secrets.token_hex(32)

TIMINGS: dict[str, float] = {}


def artifacts() -> Path:
    folder = Path(os.environ.get("COURSE_ARTIFACTS", REPO / "artifacts")) / "docker-e2e"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class timed:
    """Record how long a phase took in TIMINGS (and so in timings.json)."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.start = time.monotonic()

    def __exit__(self, *exc):
        TIMINGS[self.name] = round(time.monotonic() - self.start, 1)
        (artifacts() / "timings.json").write_text(json.dumps(TIMINGS, indent=1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http():
    """A requests session that talks to 127.0.0.1 directly, whatever proxy the environment names."""
    import requests

    session = requests.Session()
    session.trust_env = False
    return session


def wait_for(what: str, probe, timeout: float, every: float = 1.0):
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds (a hang guard)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except Exception as error:  # not up yet: connection refused and the like
            result, last = None, error
        if result:
            return result
        time.sleep(every)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s (last error: {last})")


# --------------------------------------------------------------------------
# The engine and the images (once per run)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    if os.environ.get("COURSE_SKIP_DOCKER_E2E") == "1":
        pytest.skip("COURSE_SKIP_DOCKER_E2E=1: the Docker end-to-end test is switched off")
    dev_socket = os.environ.get("COURSE_E2E_ATTACH")  # developing: an engine with the images already built
    eng = Engine.attach(dev_socket) if dev_socket else Engine()
    started = time.monotonic()
    try:
        with timed("engine_start"):
            if not dev_socket:
                eng.start()
        yield eng
    finally:
        (artifacts() / "dockerd.log").write_text(eng.log_tail(200_000))
        left = eng.stop()
        TIMINGS["total"] = round(time.monotonic() - started, 1)
        (artifacts() / "timings.json").write_text(json.dumps(TIMINGS, indent=1))
        print(f"\ndocker e2e timings (s): {json.dumps(TIMINGS)}")
        assert not left, f"the engine left this behind: {left}"


@pytest.fixture(scope="module")
def images(engine):
    """Build the stand-in bases, the course image and the hub image, two builds at a time."""
    logs = artifacts()
    built = [engine.docker("image", "inspect", i, check=False).returncode == 0 for i in (COURSE_IMAGE, HUB_IMAGE)]
    if engine.attached and all(built):  # developing: reuse what an earlier run built on this engine
        return {"course": COURSE_IMAGE, "hub": HUB_IMAGE}
    try:
        with timed("base_debootstrap_import"):
            engine.import_minbase()
        with timed("build_standin_bases"):
            torch_context = engine.torch_wheel_context()
            empty = engine.root / "empty-context"
            empty.mkdir()
            torch_base = engine.build(E2E / "pytorch-standin.Dockerfile", torch_context, PYTORCH_STANDIN,
                                      logs / "build-pytorch-standin.log", MINBASE=MINBASE)  # fmt: skip
            hub_base = engine.build(E2E / "jupyterhub-standin.Dockerfile", empty, JUPYTERHUB_STANDIN,
                                    logs / "build-jupyterhub-standin.log", MINBASE=MINBASE)  # fmt: skip
            finish(torch_base, "the PyTorch stand-in", timeout=900)
        # docker/Dockerfile unchanged: only build arguments differ from a GPU build.
        course = engine.build(REPO / "docker" / "Dockerfile", REPO, COURSE_IMAGE, logs / "build-course.log",
                              BASE_IMAGE=PYTORCH_STANDIN, COURSE_PREFETCH="", COURSE_BUILD_SMOKE="0")  # fmt: skip
        with timed("build_course_image"):
            finish(hub_base, "the JupyterHub stand-in", timeout=900)
            hub = engine.build(REPO / "docker" / "jupyterhub" / "Dockerfile", REPO / "docker" / "jupyterhub",
                               HUB_IMAGE, logs / "build-hub.log", HUB_BASE_IMAGE=JUPYTERHUB_STANDIN)  # fmt: skip
            finish(course, "docker/Dockerfile", timeout=1200)
            finish(hub, "docker/jupyterhub/Dockerfile", timeout=600)
    except EngineError as error:
        pytest.fail(str(error))
    size = engine.docker("image", "inspect", "-f", "{{.Size}}", COURSE_IMAGE).stdout.strip()
    TIMINGS["course_image_gb"] = round(int(size) / 1e9, 2)
    return {"course": COURSE_IMAGE, "hub": HUB_IMAGE}


# --------------------------------------------------------------------------
# The course image on its own
# --------------------------------------------------------------------------

LOAD_BUNDLED_MODEL = """
import os, socket
from course.assets import load_model, load_tokenizer
try:
    socket.create_connection(("pypi.org", 443), timeout=3)
    print("network: reachable")
except OSError:
    print("network: none")
tokenizer, model = load_tokenizer(), load_model()
hidden = model(**tokenizer(["the film was great"], return_tensors="pt")).last_hidden_state
print("model:", type(model).__name__, tuple(hidden.shape), "offline:", os.environ.get("HF_HUB_OFFLINE"))
"""

HF_CACHE_WRITE = """
import os, pathlib
probe = pathlib.Path(os.environ["HF_HOME"]) / "hub" / "e2e-probe"
probe.parent.mkdir(parents=True, exist_ok=True)
probe.write_text("ok")
print("wrote", probe, probe.read_text())
"""


def test_course_image_doctor_health_lab_user_cache_and_offline_model(engine, images):
    image = images["course"]
    with timed("check_doctor"):
        doctor = engine.docker("run", "--rm", "--network=host", image, "course", "doctor", "--json", check=False)
    assert doctor.returncode in (0, 1), f"course doctor found errors:\n{doctor.stdout[-3000:]}{doctor.stderr[-2000:]}"
    report = json.loads(doctor.stdout)
    errors = [f for f in report.get("findings", []) if f.get("severity") == "error"]
    assert not errors

    port, token = free_port(), secrets.token_hex(16)
    with timed("check_lab_healthy"):
        # the image's own HEALTHCHECK command, polled every 2 s instead of 30 s
        engine.docker(
            "run", "-d", "--name=course-e2e-lab", "--network=host", "--health-interval=2s",
            "--health-start-period=300s", image,
            "jupyter", "lab", "--ip=127.0.0.1", f"--port={port}", "--no-browser",
            f"--ServerApp.token={token}", "--ServerApp.root_dir=/home/jovyan",
        )  # fmt: skip

        def healthy():
            state = json.loads(engine.docker("inspect", "-f", "{{json .State}}", "course-e2e-lab").stdout)
            assert state["Running"], engine.docker("logs", "course-e2e-lab", check=False).stderr[-3000:]
            return state.get("Health", {}).get("Status") == "healthy"

        wait_for("the course container's HEALTHCHECK to pass", healthy, timeout=300)
    lab = http().get(f"http://127.0.0.1:{port}/lab?token={token}", timeout=30)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    assert http().get(f"http://127.0.0.1:{port}/api/contents", timeout=30).status_code == 403  # token required

    def run_in_lab(*command):
        return engine.docker("exec", "course-e2e-lab", *command).stdout

    assert run_in_lab("id", "-u").strip() == "1000"
    assert run_in_lab("id", "-un").strip() == "jovyan"
    assert "wrote /opt/hf-cache/hub/e2e-probe ok" in run_in_lab("python", "-c", HF_CACHE_WRITE)
    seeded = run_in_lab("ls", "/home/jovyan/notebooks").split()
    assert sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb")) == sorted(
        s for s in seeded if s.endswith(".ipynb")
    )
    engine.docker("rm", "-f", "course-e2e-lab")

    with timed("check_offline_model"):
        model = engine.docker("run", "--rm", "--network=none", image, "python", "-c", LOAD_BUNDLED_MODEL)
    assert "network: none" in model.stdout
    assert "model: BertModel (1, 6, 384) offline: 1" in model.stdout, model.stdout + model.stderr[-2000:]

    # no solutions or hidden tests in an image every student runs
    leaked = engine.docker("run", "--rm", "--network=none", image, "bash", "-c",
                           "grep -rlE 'BEGIN (SOLUTION|HIDDEN TESTS)' /opt/course /home/jovyan || true")  # fmt: skip
    assert leaked.stdout.strip() == ""


# --------------------------------------------------------------------------
# A class through JupyterHub
# --------------------------------------------------------------------------


def expand(value: str, variables: dict[str, str]) -> str:
    """docker compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, from ``variables``."""

    def one(match):
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        if variables.get(name):
            return variables[name]
        if op == ":?":
            raise AssertionError(f"compose needs {name}: {arg}")
        return arg

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


class Hub:
    """The running hub: its URL, and logins through its REST API."""

    def __init__(self, engine: Engine, url: str, data: Path):
        self.engine, self.url, self.data = engine, url, data
        self.tokens: dict[str, str] = {}

    def login(self, name: str, password: str):
        """Log in with the login form; return the session (None if refused)."""
        session = http()
        session.get(f"{self.url}/hub/login", timeout=30).raise_for_status()
        response = session.post(
            f"{self.url}/hub/login",
            data={"username": name, "password": password, "_xsrf": session.cookies.get("_xsrf")},
            allow_redirects=False, timeout=60,
        )  # fmt: skip
        return session if response.status_code == 302 else None

    def token(self, name: str, password: str) -> str:
        """An API token, asked for through the REST API with the logged-in session."""
        session = self.login(name, password)
        assert session is not None, f"{name} could not log in"
        response = session.post(
            f"{self.url}/hub/api/users/{name}/tokens",
            json={"note": "e2e", "expires_in": 3600},
            headers={"X-XSRFToken": session.cookies.get("_xsrf", path="/hub/")},
            timeout=30,
        )  # fmt: skip
        assert response.status_code == 201, response.text
        self.tokens[name] = response.json()["token"]
        return self.tokens[name]

    def api(self, method: str, path: str, name: str, **kwargs):
        headers = {"Authorization": f"token {self.tokens[name]}"}
        return http().request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)

    def spawn(self, name: str) -> str:
        """Start the user's server through the REST API; wait until it answers; return its container."""
        started = self.api("POST", f"/hub/api/users/{name}/server", name)
        assert started.status_code in (201, 202), started.text

        def ready():
            user = self.api("GET", f"/hub/api/users/{name}", name).json()
            server = user.get("servers", {}).get("")
            return server and server.get("ready")

        wait_for(f"{name}'s server", ready, timeout=300, every=2)
        status = self.api("GET", f"/user/{name}/api/status", name)
        assert status.status_code == 200, status.text
        return f"course-{name}"

    def run(self, container: str, *command: str, user: str | None = None, check: bool = True, env=()):
        extra = [f"--user={user}"] if user else []
        for item in env:
            extra.append(f"--env={item}")
        return self.engine.docker("exec", *extra, container, *command, check=check)


@pytest.fixture(scope="module")
def hub(engine, images):
    """The hub of docker/jupyterhub on the host network, with the formgrader service and the course data."""
    data = engine.root / "hub"
    hub_data = engine.root / "hub-state"
    for folder in (data, hub_data):
        folder.mkdir(mode=0o755)
    ports = {name: free_port() for name in ["proxy", "hub_api", "proxy_api", "formgrader"]}
    image = images["course"]

    with timed("hub_start"):
        # fresh homes (an attached development engine keeps volumes between runs)
        engine.docker("volume", "rm", "-f", "course-home-alice", "course-home-prof", "course-hf-cache", check=False)
        # docker-compose.yml's course-data and hf-cache services, as plain docker runs
        engine.docker("run", "--rm", "--network=none", "--user=0:0", "--entrypoint=/bin/bash",
                      f"--volume={data}/exchange:/srv/nbgrader/exchange", f"--volume={data}/course:/srv/course",
                      f"--volume={REPO}/grading:/opt/course/grading:ro",
                      "--env=COURSE_ID=course", "--env=COURSE_HUB_GRADER_GID=2000",
                      image, "/opt/course/bin/init-course-data.sh")  # fmt: skip
        engine.docker("run", "--rm", "--network=none", "--volume=course-hf-cache:/opt/hf-cache", image,
                      "course", "assets", "verify")  # fmt: skip

        settings = {
            "COURSE_HUB_NETWORK": "host",
            "COURSE_HUB_IMAGE": image,
            "COURSE_HUB_PULL_POLICY": "never",
            "COURSE_HUB_BIND_URL": f"http://127.0.0.1:{ports['proxy']}",
            "COURSE_HUB_HUB_BIND_URL": f"http://127.0.0.1:{ports['hub_api']}",
            "COURSE_HUB_PROXY_API_URL": f"http://127.0.0.1:{ports['proxy_api']}",
            "COURSE_HUB_HEALTH_URL": f"http://127.0.0.1:{ports['hub_api']}/hub/health",
            "COURSE_HUB_FORMGRADER_URL": f"http://127.0.0.1:{ports['formgrader']}",
            "COURSE_FORMGRADER_TOKEN": FORMGRADER_TOKEN,
            "COURSE_HUB_DATA": str(data),
            "COURSE_HUB_GPU_MODE": "none",
            "COURSE_HUB_CPU_LIMIT": "2",
            "COURSE_HUB_MEM_LIMIT": "6G",
            "COURSE_HUB_SHM_SIZE": "256m",
            "COURSE_HUB_SHARED_PASSWORD": CLASS_PASSWORD,
            "COURSE_HUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "COURSE_HUB_ADMINS": "prof",
            "COURSE_HUB_INSTRUCTORS": "prof",
            "COURSE_HUB_STUDENTS": "alice,bob",
            "COURSE_ID": "course",
        }
        engine.docker("run", "-d", "--name=course-e2e-hub", "--network=host",
                      f"--volume={engine.socket}:/var/run/docker.sock", f"--volume={hub_data}:/data",
                      *[f"--env={k}={v}" for k, v in settings.items()], images["hub"])  # fmt: skip

        # the formgrader exactly as docker-compose.yml defines it, with loopback addresses
        compose = yaml.safe_load((REPO / "docker" / "jupyterhub" / "docker-compose.yml").read_text())
        service = compose["services"]["formgrader"]
        variables = {**settings, "COURSE_HUB_DATA": str(data)}
        env = {k: expand(str(v), variables) for k, v in service["environment"].items()}
        env["JUPYTERHUB_API_URL"] = f"http://127.0.0.1:{ports['hub_api']}/hub/api"
        env["JUPYTERHUB_SERVICE_URL"] = f"http://127.0.0.1:{ports['formgrader']}/services/formgrader/"
        volumes = [expand(v, variables) for v in service["volumes"]]
        engine.docker("run", "-d", "--name=course-e2e-formgrader", "--network=host",
                      f"--workdir={service['working_dir']}", f"--shm-size={expand(service['shm_size'], variables)}",
                      *[f"--group-add={expand(g, variables)}" for g in service["group_add"]],
                      *[f"--volume={v}" for v in volumes], *[f"--env={k}={v}" for k, v in env.items()],
                      image, *service["command"])  # fmt: skip

        url = f"http://127.0.0.1:{ports['proxy']}"
        wait_for("the hub", lambda: http().get(f"{url}/hub/health", timeout=5).status_code == 200, timeout=180)
    running = Hub(engine, url, data)
    yield running
    for name in ["course-e2e-hub", "course-e2e-formgrader"]:
        logs = engine.docker("logs", name, check=False)
        (artifacts() / f"{name}.log").write_text(logs.stdout + logs.stderr)


def solved(released: dict, source: dict, questions: set[str]) -> dict:
    """The released notebook with the instructor's solution cells for ``questions`` (a student's answers)."""
    answers = {
        cell["metadata"]["nbgrader"]["grade_id"]: cell["source"]
        for cell in source["cells"]
        if cell["metadata"].get("nbgrader", {}).get("solution")
    }
    for cell in released["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in questions:
            lines = "".join(answers[grade_id]).splitlines(keepends=True)
            cell["source"] = [
                line for line in lines if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line
            ]
    return released


def test_a_class_through_jupyterhub_release_submit_collect_grade_feedback(hub):
    with timed("hub_login_and_spawn"):
        assert hub.login("alice", "wrong password") is None
        assert hub.login("prof", CLASS_PASSWORD) is None  # the instructor is an admin: the class password fails
        hub.token("alice", CLASS_PASSWORD)
        hub.token("prof", ADMIN_PASSWORD)
        prof = hub.spawn("prof")
        alice = hub.spawn("alice")
    for container, user in [(prof, "prof"), (alice, "alice")]:
        assert hub.run(container, "id", "-u").stdout.strip() == "1000"
        assert hub.run(container, "printenv", "JUPYTERHUB_USER").stdout.strip() == user
    assert "2000" in hub.run(prof, "id", "-G").stdout.split()
    assert "2000" not in hub.run(alice, "id", "-G").stdout.split()

    with timed("release_fetch_submit_collect"):
        # the instructor, in the course directory of their own server
        release = hub.run(prof, "bash", "-c", f"cd /srv/course && nbgrader generate_assignment {ASSIGNMENT} "
                          f"&& nbgrader release_assignment {ASSIGNMENT}", check=False)  # fmt: skip
        assert release.returncode == 0, release.stdout[-2000:] + release.stderr[-3000:]
        # the student, through their server's assignment list (what the Lab extension calls)
        listed = hub.api("GET", "/user/alice/assignments", "alice", params={"course_id": "course"})
        assert listed.status_code == 200, listed.text
        assert [(a["assignment_id"], a["status"]) for a in listed.json()["value"]] == [(ASSIGNMENT, "released")]
        fetched = hub.api("POST", "/user/alice/assignments/fetch", "alice",
                          data={"course_id": "course", "assignment_id": ASSIGNMENT})  # fmt: skip
        assert fetched.status_code == 200 and fetched.json()["success"], fetched.text
        notebook = f"/home/jovyan/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
        released = json.loads(hub.run(alice, "cat", notebook).stdout)
        source = json.loads((REPO / "grading" / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())
        answer = solved(released, source, {"pick_device", "matmul_tflops"})  # parse_gpu_line left unsolved
        hub.engine.docker("exec", "-i", alice, "bash", "-c", f"cat > {notebook}", input=json.dumps(answer))
        submitted = hub.api("POST", "/user/alice/assignments/submit", "alice",
                            data={"course_id": "course", "assignment_id": ASSIGNMENT})  # fmt: skip
        assert submitted.status_code == 200 and submitted.json()["success"], submitted.text

        # isolation: the student cannot list the inbound folder, nor see the course directory
        snoop = hub.run(alice, "ls", "/srv/nbgrader/exchange/course/inbound", check=False)
        assert snoop.returncode != 0 and "Permission denied" in snoop.stderr
        assert hub.run(alice, "ls", "/srv/course", check=False).returncode != 0
        assert (hub.data / "course" / "gradebook.db").exists()  # it exists, on the host and for instructors
        hidden = hub.run(alice, "bash", "-c", "grep -rlE 'BEGIN (SOLUTION|HIDDEN TESTS)' /opt/course /srv /home /tmp "
                         "--include=*.ipynb 2>/dev/null || true")  # fmt: skip
        assert hidden.stdout.strip() == "", f"solutions visible to a student: {hidden.stdout}"
        # the instructor sees the submission and collects it
        assert hub.run(prof, "ls", "/srv/nbgrader/exchange/course/inbound").stdout.startswith(f"alice+{ASSIGNMENT}+")
        collect = hub.run(prof, "bash", "-c", f"cd /srv/course && nbgrader collect {ASSIGNMENT}", check=False)
        assert collect.returncode == 0, collect.stderr[-3000:]

    with timed("course_grade_sandboxed"):
        grade = hub.run(prof, "/opt/course/bin/grade-course.sh", ASSIGNMENT, "--jobs", "1", "--quiet",
                        user="0", env=[f"COURSE_GRADE_UID_BASE={UID_BASE}"], check=False)  # fmt: skip
    assert grade.returncode == 0, grade.stdout[-3000:] + grade.stderr[-3000:]
    assert "sandbox on" in grade.stdout
    (artifacts() / "course-grade.txt").write_text(grade.stdout)
    # Whether the kernels' process trees get cgroups in the container, the summary says which limits held.
    assert any(line.startswith("kernel limits: per process") for line in grade.stdout.splitlines()), grade.stdout
    grades = hub.run(prof, "cat", f"/srv/course/results/{ASSIGNMENT}/grades.csv").stdout.splitlines()
    header, row = grades[0].split(","), dict(zip(grades[0].split(","), grades[1].split(","), strict=True))
    assert header[:3] == ["student_id", "total", "max"] and len(grades) == 2
    assert row["student_id"] == "alice"
    points = sum(
        cell["metadata"]["nbgrader"].get("points", 0)
        for cell in source["cells"]
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade")
    )
    assert (float(row["total"]), float(row["max"])) == (6.0, float(points)), row  # pick_device 4 + matmul_tflops 2
    assert float(row["test_parse_gpu_line"]) == 0.0

    with timed("feedback"):
        released_feedback = hub.run(prof, "bash", "-c", f"cd /srv/course && nbgrader release_feedback {ASSIGNMENT}",
                                    check=False)  # fmt: skip
        assert released_feedback.returncode == 0, released_feedback.stderr[-3000:]
        fetched = hub.run(alice, "bash", "-c", f"cd /home/jovyan && nbgrader fetch_feedback {ASSIGNMENT}", check=False)
        assert fetched.returncode == 0, fetched.stderr[-3000:]
        html = hub.run(alice, "bash", "-c", f"cat /home/jovyan/{ASSIGNMENT}/feedback/*/{ASSIGNMENT}.html").stdout
    assert "6.0" in html and "8.0" in html
    assert "BEGIN HIDDEN TESTS" not in html

    # the formgrader is the instructor's: 200 through the hub for prof, 403 for a student
    with timed("formgrader"):

        def formgrader(name):
            return hub.api("GET", "/services/formgrader/formgrader/api/assignments", name)

        wait_for("the formgrader service", lambda: formgrader("prof").status_code == 200, timeout=120, every=2)
    assignments = {a["name"] for a in formgrader("prof").json()}
    assert ASSIGNMENT in assignments
    assert formgrader("alice").status_code == 403
