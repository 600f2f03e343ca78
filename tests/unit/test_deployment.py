"""The deployment artifacts match the design, checked offline: every Kubernetes manifest validates strictly
against the Kubernetes OpenAPI schemas that kubernetes-validate bundles, the probes, secrets and worker placement
are what the README promises, and docker-compose's worker can be scaled while one replica runs beat."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.33.0"
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def documents() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> list[dict]:
    return [doc for doc in documents() if doc["kind"] == kind]


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("document", documents(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_every_manifest_validates_against_the_kubernetes_schemas(document):
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_web_is_a_deployment_behind_a_service_with_probes():
    [web] = [doc for doc in by_kind("Deployment") if doc["metadata"]["name"] == "sandboxctl-web"]
    [container] = web["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [service] = by_kind("Service")
    assert service["spec"]["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()
    assert {port["port"] for port in service["spec"]["ports"]} == {8000, 9385}


def test_workers_are_a_privileged_daemonset_on_gvisor_nodes_named_after_their_node():
    [worker] = by_kind("DaemonSet")
    spec = worker["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"sandboxctl.io/gvisor": "true"}
    assert all(container["securityContext"]["privileged"] for container in containers(worker))
    [main] = spec["containers"]
    assert "python -m executor.config sandbox" in " ".join(main["command"]), "the queues from their one home"
    host = {item["name"]: item for item in main["env"]}["SANDBOX_WORKER_HOST"]
    assert host["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_secrets_come_from_the_secret_never_from_a_literal():
    [secret] = by_kind("Secret")
    secret_names = set(secret["stringData"])
    for workload in by_kind("Deployment") + by_kind("DaemonSet") + by_kind("Job"):
        for container in containers(workload):
            literal = {item["name"] for item in container.get("env", []) if "value" in item}
            assert not literal & secret_names, f"{workload['metadata']['name']} spells a secret out"
            if container["name"] != "images":
                assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY"} <= secret_names


def test_only_one_replica_runs_the_reconcilers_schedule():
    beats = [doc for doc in by_kind("Deployment") if "-B" in " ".join(containers(doc)[0]["command"])]
    assert [doc["spec"]["replicas"] for doc in beats] == [1]


def test_compose_scales_the_worker_and_keeps_beat_in_one_service():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    worker = services["worker"]
    assert "ports" not in worker and "container_name" not in worker, "scalable with --scale worker=N"
    assert "SANDBOX_WORKER_HOST" not in worker["environment"], "each replica is named by its own host name"
    assert "-B" not in worker["command"] and "control" not in worker["command"]
    assert [name for name, service in services.items() if " -B " in f" {service.get('command', '')} "] == ["io"]
