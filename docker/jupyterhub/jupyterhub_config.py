"""JupyterHub for the course: one container per student, spawned by DockerSpawner.

Every site setting comes from an environment variable (see ``.env.example``
next to this file) so that the same file serves a laptop trial and a GPU
server; the defaults are the ones ``docker-compose.yml`` expects.

What each student container gets:

* the course image (``COURSE_HUB_IMAGE``) running ``jupyterhub-singleuser``;
* GPUs through Docker device requests: all of them, or one per student with
  ``COURSE_HUB_GPU_MODE=spread`` (least-loaded GPU of ``COURSE_HUB_GPU_IDS``),
  or none;
* a memory and CPU limit and a larger ``/dev/shm``: Docker's default of 64 MB
  makes DataLoader workers die with "bus error" and NCCL fail with
  "failed to extend /dev/shm" (``--ipc=host`` would also fix it, but shares
  the host's IPC namespace between students);
* a persistent home volume, the pre-filled Hugging Face cache read-only, and
  the nbgrader exchange: released assignments and feedback read-only, the
  inbound directory writable but not listable (see ``init-course-data.sh``).

Instructors (``COURSE_HUB_INSTRUCTORS``) get the ``instructor`` role, which
opens the shared formgrader service, and their own servers mount the whole
exchange and the course directory read-write with the graders' group.
"""

import os
from collections import Counter

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file


def _env(name, default):
    value = os.environ.get(name, "").strip()
    return value if value else default


def _env_list(name):
    """Comma- or space-separated list from the environment, without empties."""
    return [item for item in _env(name, "").replace(",", " ").split() if item]


def _env_float(name, default):
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; set e.g. {name}={default}") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} must not be negative")
    return value


def _env_bool(name, default):
    raw = _env(name, "1" if default else "0").lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean; use 1 or 0")


# --------------------------------------------------------------------------
# Site settings
# --------------------------------------------------------------------------
IMAGE = _env("COURSE_HUB_IMAGE", "course:latest")
# A Docker network shared by the hub and the servers, or "host": every
# container on the host's network, each server on its own 127.0.0.1 port
# (no bridge, no private addresses; the end-to-end test runs this way).
NETWORK = _env("COURSE_HUB_NETWORK", "course-hub")
HOST_NETWORK = NETWORK == "host"
COURSE_ID = _env("COURSE_ID", "course")
NB_USER_HOME = "/home/jovyan"
HF_CACHE_PATH = "/opt/hf-cache"  # HF_HOME in the image
EXCHANGE_PATH = "/srv/nbgrader/exchange"  # nbgrader Exchange.root in the image
COURSE_PATH = "/srv/course"  # the nbgrader course directory for instructors
INSTRUCTOR_JUPYTER_CONFIG = "/opt/course/jupyter-instructor"

MEM_LIMIT = _env("COURSE_HUB_MEM_LIMIT", "16G")
CPU_LIMIT = _env_float("COURSE_HUB_CPU_LIMIT", 4)
SHM_SIZE = _env("COURSE_HUB_SHM_SIZE", "2g")
GPU_MODE = _env("COURSE_HUB_GPU_MODE", "all").lower()
GPU_IDS = _env_list("COURSE_HUB_GPU_IDS")
HOME_VOLUME = _env("COURSE_HUB_HOME_VOLUME", "course-home-{username}")
HF_CACHE_VOLUME = _env("COURSE_HUB_HF_CACHE_VOLUME", "course-hf-cache")
# Host directory (not a path inside the hub container): DockerSpawner asks the
# host's Docker daemon for these bind mounts.
DATA_DIR = _env("COURSE_HUB_DATA", "/srv/course-hub").rstrip("/")
GRADER_GID = int(_env_float("COURSE_HUB_GRADER_GID", 2000))
# What an instructor's container needs for `course grade`'s sandbox (new
# mount, pid, network, ipc and uts namespaces, tmpfs and bind mounts, then
# setresuid to a per-worker uid), run as root with `docker exec -u 0`:
# CAP_SYS_ADMIN (Docker's seccomp profile then also allows unshare and
# mount) and, on AppArmor hosts, no docker-default profile, which denies
# mount. CAP_SETUID, CAP_SETGID, CAP_KILL, CAP_CHOWN and CAP_DAC_OVERRIDE are
# in Docker's default set. The server itself runs as jovyan with no
# effective capabilities, and the image has no setuid programs to regain
# them (no-new-privileges would also strip them from `docker exec -u 0`).
# Students never get this. COURSE_HUB_GRADER_SANDBOX=0 leaves instructors'
# containers at Docker's defaults (then grade with --no-sandbox, trusted
# code only).
GRADER_SANDBOX = _env_bool("COURSE_HUB_GRADER_SANDBOX", True)
GRADER_HOST_CONFIG = {"cap_add": ["SYS_ADMIN"], "security_opt": ["apparmor=unconfined"]} if GRADER_SANDBOX else {}
HF_OFFLINE = _env_bool("COURSE_HUB_HF_OFFLINE", True)

INSTRUCTORS = set(_env_list("COURSE_HUB_INSTRUCTORS"))
ADMINS = set(_env_list("COURSE_HUB_ADMINS"))
STUDENTS = set(_env_list("COURSE_HUB_STUDENTS"))
ALLOW_ALL = _env_bool("COURSE_HUB_ALLOW_ALL", False)

FORMGRADER_URL = _env("COURSE_HUB_FORMGRADER_URL", "http://formgrader:9999")
FORMGRADER_TOKEN = _env("COURSE_FORMGRADER_TOKEN", "")
CULL_IDLE_SECONDS = int(_env_float("COURSE_HUB_CULL_IDLE_SECONDS", 3600))

if GPU_MODE not in {"all", "spread", "none"}:
    raise ValueError(f"COURSE_HUB_GPU_MODE={GPU_MODE!r}: use all, spread or none")
if GPU_MODE == "spread" and not GPU_IDS:
    raise ValueError(
        "COURSE_HUB_GPU_MODE=spread needs COURSE_HUB_GPU_IDS, the host's GPU indices "
        "(nvidia-smi --query-gpu=index --format=csv,noheader), e.g. COURSE_HUB_GPU_IDS=0,1,2,3"
    )

# --------------------------------------------------------------------------
# Hub
# --------------------------------------------------------------------------
c.JupyterHub.bind_url = _env("COURSE_HUB_BIND_URL", "http://:8000")
# The hub's API: on the Docker network every container reaches it by the hub
# container's name; with the host network, on loopback.
c.JupyterHub.hub_bind_url = _env(
    "COURSE_HUB_HUB_BIND_URL", "http://127.0.0.1:8081" if HOST_NETWORK else "http://0.0.0.0:8081"
)
c.JupyterHub.hub_connect_url = _env(
    "COURSE_HUB_CONNECT_URL", c.JupyterHub.hub_bind_url if HOST_NETWORK else "http://jupyterhub:8081"
)
PROXY_API_URL = _env("COURSE_HUB_PROXY_API_URL", "")
if PROXY_API_URL:  # the proxy's REST API (default http://127.0.0.1:8001)
    c.ConfigurableHTTPProxy.api_url = PROXY_API_URL
c.JupyterHub.cookie_secret_file = "/data/jupyterhub_cookie_secret"
c.JupyterHub.db_url = _env("COURSE_HUB_DB_URL", "sqlite:////data/jupyterhub.sqlite")
c.JupyterHub.cleanup_servers = False  # a hub restart leaves student servers running

# Authentication. The default, JupyterHub's built-in shared-password
# authenticator, suits a workshop: one class password, a roster of allowed
# names. Anyone holding that password can log in under any non-admin name,
# so instructors must be admins (they log in with the separate admin
# password) or a student could open the formgrader. For a graded course pick
# a per-person login: COURSE_HUB_AUTHENTICATOR=native (NativeAuthenticator)
# or an OAuth provider such as github or generic-oauth (oauthenticator); both
# packages are in the hub image, and their settings go in the file named by
# COURSE_HUB_EXTRA_CONFIG, loaded at the end of this one.
AUTHENTICATOR = _env("COURSE_HUB_AUTHENTICATOR", "shared-password")
c.JupyterHub.authenticator_class = AUTHENTICATOR
if AUTHENTICATOR == "shared-password":
    user_password = _env("COURSE_HUB_SHARED_PASSWORD", "")
    admin_password = _env("COURSE_HUB_ADMIN_PASSWORD", "")
    if len(user_password) < 8:
        raise ValueError(
            "COURSE_HUB_SHARED_PASSWORD must be set to a password of at least 8 characters "
            "(the class's login password), or choose another COURSE_HUB_AUTHENTICATOR"
        )
    if INSTRUCTORS - ADMINS:
        raise ValueError(
            "with the shared-password login every instructor must also be an admin, or students "
            "could log in as an instructor with the class password; add "
            f"{','.join(sorted(INSTRUCTORS - ADMINS))} to COURSE_HUB_ADMINS or choose a "
            "per-person COURSE_HUB_AUTHENTICATOR"
        )
    if ADMINS and (len(admin_password) < 32 or admin_password == user_password):
        raise ValueError(
            "COURSE_HUB_ADMIN_PASSWORD must be at least 32 characters and differ from "
            "COURSE_HUB_SHARED_PASSWORD when COURSE_HUB_ADMINS is set (openssl rand -hex 32)"
        )
    c.SharedPasswordAuthenticator.user_password = user_password
    if ADMINS:
        c.SharedPasswordAuthenticator.admin_password = admin_password
c.Authenticator.admin_users = ADMINS
c.Authenticator.allowed_users = STUDENTS | INSTRUCTORS
c.Authenticator.allow_all = ALLOW_ALL

# --------------------------------------------------------------------------
# Student containers
# --------------------------------------------------------------------------
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = IMAGE
c.DockerSpawner.pull_policy = _env("COURSE_HUB_PULL_POLICY", "ifnotpresent")
c.DockerSpawner.cmd = ["jupyterhub-singleuser"]
c.DockerSpawner.prefix = "course"
c.DockerSpawner.network_name = NETWORK
# On the host network too: it keeps DockerSpawner from publishing ports,
# which Docker refuses with network_mode host (the port is the host's).
c.DockerSpawner.use_internal_ip = True
if HOST_NETWORK:
    from dockerspawner import DockerSpawner
    from jupyterhub.utils import random_port

    class HostNetworkDockerSpawner(DockerSpawner):
        """DockerSpawner for the host network: each server on its own port of 127.0.0.1.

        With ``--network host`` there is no container address to ask Docker
        for, and every server shares the host's ports: the server listens on
        loopback, on a free port picked at each start (pre_spawn_hook).
        """

        async def get_ip_and_port(self):
            return self.ip, self.port

    c.JupyterHub.spawner_class = HostNetworkDockerSpawner
    c.DockerSpawner.ip = "127.0.0.1"
# A fresh container per start: image updates and GPU assignment apply at the
# next start; everything a student keeps lives in the home volume.
c.DockerSpawner.remove = True
c.DockerSpawner.notebook_dir = NB_USER_HOME
c.DockerSpawner.default_url = "/lab"
c.DockerSpawner.start_timeout = 180  # first CUDA initialisation and image pull
c.DockerSpawner.http_timeout = 120
c.DockerSpawner.mem_limit = MEM_LIMIT
c.DockerSpawner.cpu_limit = CPU_LIMIT
c.DockerSpawner.environment = {
    "COURSE_ID": COURSE_ID,
    "COURSE_EXCHANGE_ROOT": EXCHANGE_PATH,
    "HF_HOME": HF_CACHE_PATH,
    # The cache is mounted read-only: nothing can be downloaded into it, so
    # say so up front instead of failing later with a permission error.
    "HF_HUB_OFFLINE": "1" if HF_OFFLINE else "0",
    # Read-only on purpose: `course doctor` reports it as such, not as a fault.
    "COURSE_HF_CACHE_READONLY": "1",
}


def exchange_course_dir(host=True):
    root = f"{DATA_DIR}/exchange" if host else EXCHANGE_PATH
    return f"{root}/{COURSE_ID}"


def student_volumes():
    """Docker binds for a student: home rw, HF cache ro, exchange parts."""
    host, inside = exchange_course_dir(host=True), exchange_course_dir(host=False)
    return {
        HOME_VOLUME: {"bind": NB_USER_HOME, "mode": "rw"},
        HF_CACHE_VOLUME: {"bind": HF_CACHE_PATH, "mode": "ro"},
        f"{host}/outbound": {"bind": f"{inside}/outbound", "mode": "ro"},
        f"{host}/inbound": {"bind": f"{inside}/inbound", "mode": "rw"},
        f"{host}/feedback": {"bind": f"{inside}/feedback", "mode": "ro"},
    }


def instructor_volumes():
    """An instructor sees the whole exchange and the course directory."""
    return {
        HOME_VOLUME: {"bind": NB_USER_HOME, "mode": "rw"},
        HF_CACHE_VOLUME: {"bind": HF_CACHE_PATH, "mode": "ro"},
        f"{DATA_DIR}/exchange": {"bind": EXCHANGE_PATH, "mode": "rw"},
        f"{DATA_DIR}/course": {"bind": COURSE_PATH, "mode": "rw"},
    }


c.DockerSpawner.volumes = student_volumes()
c.DockerSpawner.extra_host_config = {"shm_size": SHM_SIZE}
c.DockerSpawner.extra_create_kwargs = {}


class GpuAllocator:
    """Give each new server the least-loaded GPU of a fixed list.

    The load of a GPU is the number of course containers holding it: the
    running ones, read back from Docker through a container label so that a
    hub restart does not forget them, plus the servers this hub has just
    assigned and that Docker may not list yet. Ties go to the first GPU in
    the list, so a quiet machine fills GPU 0, then 1, and so on.
    """

    label = "org.course.gpu"

    def __init__(self, gpu_ids):
        self.gpu_ids = [str(g) for g in gpu_ids]
        self.reserved = {}  # container name -> gpu id

    def choose(self, name, in_use):
        held = dict(in_use)
        held.update(self.reserved)
        held.pop(name, None)
        load = Counter(gpu for gpu in held.values() if gpu in self.gpu_ids)
        gpu = min(self.gpu_ids, key=lambda g: (load[g], self.gpu_ids.index(g)))
        self.reserved[name] = gpu
        return gpu

    def release(self, name):
        self.reserved.pop(name, None)

    async def in_use(self, spawner):
        """{container name: gpu id} for course containers that exist now."""
        try:
            containers = await spawner.docker(
                "containers",
                all=True,
                filters={"label": self.label, "status": ["created", "running", "restarting"]},
            )
        except Exception as error:  # no daemon answer: fall back to this hub's memory
            spawner.log.warning("Could not list GPU containers (%s); using the hub's own record", error)
            return {}
        held = {}
        for container in containers:
            names = container.get("Names") or []
            if names:
                held[names[0].lstrip("/")] = (container.get("Labels") or {}).get(self.label, "")
        return held


gpu_allocator = GpuAllocator(GPU_IDS)


def is_instructor(spawner):
    return spawner.user.name in INSTRUCTORS


def gpu_device_requests(gpu_ids=None):
    """Docker device requests: all GPUs, or the listed ones."""
    request = {"driver": "nvidia", "capabilities": [["gpu"]]}
    if gpu_ids:
        request["device_ids"] = list(gpu_ids)
    else:
        request["count"] = -1
    return [request]


async def pre_spawn_hook(spawner):
    """Settle this server's GPUs, mounts and groups just before it starts."""
    host_config = {"shm_size": SHM_SIZE}
    create_kwargs = {}
    environment = dict(spawner.environment)

    if GPU_MODE == "all":
        host_config["device_requests"] = gpu_device_requests(GPU_IDS)
    elif GPU_MODE == "spread":
        gpu = gpu_allocator.choose(spawner.object_name, await gpu_allocator.in_use(spawner))
        host_config["device_requests"] = gpu_device_requests([gpu])
        create_kwargs["labels"] = {GpuAllocator.label: gpu}
        spawner.log.info("Server %s gets GPU %s", spawner.object_name, gpu)

    if HOST_NETWORK:
        spawner.port = random_port()

    if is_instructor(spawner):
        spawner.volumes = instructor_volumes()
        host_config["group_add"] = [str(GRADER_GID)]
        # `course grade` runs in this container as root (docker exec -u 0)
        # and builds its sandbox from namespaces and mounts (see above).
        host_config.update(GRADER_HOST_CONFIG)
        environment["COURSE_ROOT"] = COURSE_PATH
        environment["JUPYTER_CONFIG_PATH"] = INSTRUCTOR_JUPYTER_CONFIG
    else:
        spawner.volumes = student_volumes()

    spawner.extra_host_config = host_config
    spawner.extra_create_kwargs = create_kwargs
    spawner.environment = environment


def post_stop_hook(spawner):
    gpu_allocator.release(spawner.object_name)


c.Spawner.pre_spawn_hook = pre_spawn_hook
c.Spawner.post_stop_hook = post_stop_hook

# --------------------------------------------------------------------------
# Instructors: roles and the shared formgrader
# --------------------------------------------------------------------------
# The formgrader is jupyterhub-singleuser running in its own container (see
# docker-compose.yml) as an external service at /services/formgrader/.
# Open /services/formgrader/formgrader in its own browser tab: JupyterHub
# >= 4.1 forbids the iframe that the Lab "Formgrader" menu would use.
services = []
roles = []
if INSTRUCTORS:
    if not FORMGRADER_TOKEN:
        raise ValueError(
            "COURSE_FORMGRADER_TOKEN must be set when COURSE_HUB_INSTRUCTORS is: "
            "the hub and the formgrader container share it (openssl rand -hex 32)"
        )
    services.append(
        {
            "name": "formgrader",
            "url": FORMGRADER_URL,
            "api_token": FORMGRADER_TOKEN,
            "oauth_no_confirm": True,
            "display": True,
            "info": {"description": f"nbgrader formgrader for {COURSE_ID}"},
        }
    )
    # Listing users in a role makes the membership exact at every start:
    # removing a name from COURSE_HUB_INSTRUCTORS revokes the role.
    roles.append(
        {
            "name": "instructor",
            "description": "Grade in the formgrader and follow students' servers",
            "scopes": [
                "access:services!service=formgrader",
                "list:users",
                "read:users:activity",
                "read:servers",
            ],
            "users": sorted(INSTRUCTORS),
        }
    )

if CULL_IDLE_SECONDS > 0:
    # Idle servers hold GPU memory: stop them (homes stay in their volumes).
    services.append(
        {
            "name": "idle-culler",
            "command": [
                "python3",
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={CULL_IDLE_SECONDS}",
            ],
        }
    )
    roles.append(
        {
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }
    )

c.JupyterHub.services = services
c.JupyterHub.load_roles = roles

# Site additions (another authenticator's settings, a different proxy, ...).
EXTRA_CONFIG = _env("COURSE_HUB_EXTRA_CONFIG", "")
if EXTRA_CONFIG:
    load_subconfig(EXTRA_CONFIG)  # noqa: F821 - provided by the config loader
