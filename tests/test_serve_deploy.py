"""The service's deployment files: Kubernetes manifests valid against the schemas, and the settings that matter.

``kubernetes-validate`` ships the Kubernetes JSON schemas in the package, so
the check runs offline.  Strict mode rejects unknown fields (a typo such as
``readinessProbes`` would otherwise be silently ignored by the API server).
"""

from pathlib import Path

import pytest
import yaml

K8S = Path(__file__).parents[1] / "docker" / "serve" / "k8s"
COMPOSE = Path(__file__).parents[1] / "docker" / "serve" / "docker-compose.yml"
#: Kubernetes versions the manifests must be valid for (preStop `sleep` needs 1.30+).
VERSIONS = ["1.31.0", "1.34.0"]
MANIFESTS = sorted(K8S.glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_are_valid_against_the_kubernetes_schemas(path, version):
    import kubernetes_validate

    for doc in documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_misspelt_field():
    import kubernetes_validate

    deployment = documents(K8S / "deployment.yaml")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def container(path: Path) -> dict:
    return documents(path)[0]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml"])
def test_deployments_probe_healthz_run_non_root_with_limits_and_outlast_the_graceful_shutdown(name):
    doc = documents(K8S / name)[0]
    pod = doc["spec"]["template"]["spec"]
    main = container(K8S / name)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(main["resources"]["limits"])
    assert pod["terminationGracePeriodSeconds"] > 30  # the server's own graceful shutdown is 30 s
    assert main["command"][:2] == ["course", "serve"] and "--port" in main["command"]
    port = int(main["command"][main["command"].index("--port") + 1])
    assert main["ports"][0]["containerPort"] == port
    gpu = main["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpu == "1") == (name == "deployment-gpu.yaml")


def test_service_and_autoscaler_point_at_the_deployment():
    deployment = documents(K8S / "deployment.yaml")[0]
    service = documents(K8S / "service.yaml")[0]
    hpa = documents(K8S / "hpa.yaml")[0]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["type"] == "ClusterIP"  # not exposed outside the cluster by default
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]


def test_compose_service_is_non_root_limited_published_on_loopback_and_health_checked():
    service = yaml.safe_load(COMPOSE.read_text())["services"]["serve"]
    assert service["user"].split(":")[0] not in ("0", "root")
    assert service["read_only"] is True and service["mem_limit"] and service["cpus"]
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    assert "/healthz" in " ".join(service["healthcheck"]["test"])
    assert service["command"][:2] == ["course", "serve"]
    assert int(service["stop_grace_period"].rstrip("s")) > 30
