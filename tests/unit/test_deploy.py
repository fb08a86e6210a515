"""deploy/: the manifests and compose file against their schemas, and against the code.

No container engine is needed: Kubernetes manifests are checked with kubernetes-validate's
bundled schemas (strict: unknown fields fail), the compose file with the compose-spec JSON schema
vendored in deploy/schemas/, and the NATS configs by nats-server's own configuration test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from qubus.bus import auth
from qubus.bus.config import Settings
from qubus.bus.natsserver import MAX_PAYLOAD, server_binary
from qubus.devices.profiles import DEFAULT_FLEET
from qubus_services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
IMAGE = "qubus:0.1.0"
UID = 10001
EVALUATION_STAGES = ("sandbox", "noise")
DASHBOARD = ("qubus", "dashboard", "--host", "0.0.0.0", "--port", "8470")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object of deploy/k8s, with the file it comes from."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _deployments() -> list[dict[str, Any]]:
    return [doc for _, doc in _manifests() if doc["kind"] == "Deployment"]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _compose() -> dict[str, Any]:
    return _yaml(DEPLOY / "compose.yaml")


def _qubus_compose_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _compose()["services"].items()
        if not name.startswith("nats-") and name != "prometheus"
    }


def _probe() -> list[str]:
    """The readiness probe of every pod: the ingestion Deployment's."""
    (ingestion,) = [d for d in _deployments() if d["metadata"]["name"] == "qubus-ingestion"]
    command = _container(ingestion)["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    return command


def _expected_commands() -> set[tuple[str, ...]]:
    """Every service once, one qpu per node of the default fleet, and the dashboard."""
    commands = {("qubus", "service", name) for name in SERVICES if name != "qpu"}
    commands |= {("qubus", "service", "qpu", "--node", node) for node in DEFAULT_FLEET}
    return commands | {DASHBOARD}


def _name(command: list[str]) -> str:
    """What a Deployment (``qubus-<name>``) and compose service running ``command`` are called:
    the service, qpu-<node with dashes> for a QPU emulator, ``dashboard``."""
    if command[1] == "dashboard":
        return "dashboard"
    return command[2] if len(command) == 3 else "qpu-" + command[4].replace("_", "-")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    manifests = _manifests()
    assert manifests
    for name, doc in manifests:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(item) for item in exc.path)
            pytest.fail(f"{name}: {path}: {exc.message}")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _yaml(K8S / "kustomization.yaml")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    (image,) = kustomization["images"]
    assert f"{image['name']}:{image['newTag']}" == IMAGE


def test_compose_file_validates_against_the_compose_spec() -> None:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(_compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_every_service_and_fleet_node_has_a_deployment_and_a_compose_service() -> None:
    expected = _expected_commands()
    k8s = [tuple(_container(d)["command"]) for d in _deployments()]
    compose = [tuple(s["command"]) for s in _qubus_compose_services().values()]
    procfile = [
        tuple(shlex.split(line.split(":", 1)[1]))
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.strip()
    ]
    for where, commands in (("k8s", k8s), ("compose", compose), ("Procfile", procfile)):
        assert sorted(commands) == sorted(expected), where
    assert {p.name for p in (ROOT / "services").iterdir() if (p / "main.py").exists()} == set(
        SERVICES
    )


def test_names_follow_the_command() -> None:
    """qubus-<service> / <service>, and qpu-<node with dashes> for QPU emulators."""
    for deployment in _deployments():
        name = _name(_container(deployment)["command"])
        assert deployment["metadata"]["name"] == f"qubus-{name}"
    for name, service in _qubus_compose_services().items():
        assert name == _name(service["command"])


def test_one_image_everywhere() -> None:
    assert {_container(d)["image"] for d in _deployments()} == {IMAGE}
    assert {s["image"] for s in _qubus_compose_services().values()} == {IMAGE}
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(rf"^USER {UID}:{UID}$", dockerfile, re.MULTILINE)
    for service in _qubus_compose_services().values():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}


def test_nats_image_and_payload_agree() -> None:
    values = _yaml(DEPLOY / "helm" / "nats-values.yaml")
    tag = values["container"]["image"]["tag"]
    compose_nats = {n: s for n, s in _compose()["services"].items() if n.startswith("nats-")}
    assert {s["image"] for s in compose_nats.values()} == {f"nats:{tag}"}
    assert values["config"]["merge"]["max_payload"] == MAX_PAYLOAD == 8 * 1024 * 1024
    for conf in ("single.conf", "cluster.conf"):
        assert "\nmax_payload: 8MB\n" in (DEPLOY / "nats" / conf).read_text()


def test_helm_values_ask_for_a_jetstream_cluster_of_three_on_files() -> None:
    config = _yaml(DEPLOY / "helm" / "nats-values.yaml")["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    assert config["jetstream"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["pvc"]["enabled"] is True


def test_compose_runs_a_three_node_cluster_routed_by_name() -> None:
    compose = _compose()
    nats = {n: s for n, s in compose["services"].items() if n.startswith("nats-")}
    assert sorted(nats) == ["nats-1", "nats-2", "nats-3"]
    routes = re.findall(r"nats://([\w-]+):6222", (DEPLOY / "nats" / "cluster.conf").read_text())
    assert sorted(routes) == sorted(nats)
    for name, service in nats.items():
        assert service["environment"] == {"NATS_SERVER_NAME": name}
        assert service["networks"]["default"]["aliases"] == ["nats"]
        assert f"{name}:/data" in service["volumes"]
        assert (DEPLOY / "nats" / "cluster.conf").exists()
    for service in _qubus_compose_services().values():
        assert set(service["depends_on"]) == set(nats)
        assert service["environment"]["QUBUS_NATS_URL"] == "nats://nats:4222"


@pytest.mark.parametrize("conf", ["single.conf", "cluster.conf"])
def test_nats_configs_pass_the_servers_own_check(conf: str, tmp_path: Path) -> None:
    """With the auth.conf ``qubus creds`` writes beside them (as compose mounts it)."""
    services = [s for s in SERVICES if s != "qpu"]
    block = auth.write_credentials(tmp_path, auth.identities(services, DEFAULT_FLEET, ["local"]))
    (tmp_path / "auth.conf").write_text(block)
    shutil.copy(DEPLOY / "nats" / conf, tmp_path / conf)
    result = subprocess.run(
        [server_binary(), "-t", "-c", str(tmp_path / conf)],
        env={**os.environ, "NATS_SERVER_NAME": "nats-1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_evaluation_stages_run_replicated() -> None:
    replicas = {_container(d)["command"][2]: d["spec"]["replicas"] for d in _deployments()}
    compose = _qubus_compose_services()
    for stage in EVALUATION_STAGES:
        assert replicas[stage] >= 2
        assert compose[stage]["deploy"]["replicas"] >= 2


def test_pods_are_locked_down_and_sized() -> None:
    for deployment in _deployments():
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        security = container["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == UID
        assert security["readOnlyRootFilesystem"] is True
        assert security["runAsNonRoot"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert container["readinessProbe"]["exec"]["command"] == _probe()
        mounts = {m["name"]: (m["mountPath"], m.get("readOnly")) for m in container["volumeMounts"]}
        assert mounts == {"tmp": ("/tmp", None), "creds": ("/var/run/qubus", True)}
        volumes = {v["name"]: next(k for k in v if k != "name") for v in pod["volumes"]}
        assert volumes == {"tmp": "emptyDir", "creds": "secret"}
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    for service in _qubus_compose_services().values():
        assert service["read_only"] is True
        assert service["tmpfs"] == ["/tmp"]
        assert service["user"] == f"{UID}:{UID}"
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["healthcheck"]["test"] == ["CMD", *_probe()]


def test_qpu_deployments_never_overlap() -> None:
    for deployment in _deployments():
        if _container(deployment)["command"][2] == "qpu":
            assert deployment["spec"]["replicas"] == 1
            assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_settings_are_qubus_settings() -> None:
    fields = {f"QUBUS_{name.upper()}" for name in Settings.model_fields}
    (configmap,) = [doc for _, doc in _manifests() if doc["kind"] == "ConfigMap"]
    assert set(configmap["data"]) <= fields
    assert configmap["data"]["QUBUS_NATS_URL"] == "nats://nats:4222"
    for deployment in _deployments():
        env_from = _container(deployment)["envFrom"]
        assert env_from == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    for service in _qubus_compose_services().values():
        assert set(service["environment"]) <= fields


def test_prometheus_scrapes_the_dashboard_where_it_listens() -> None:
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["dashboard:8470"]}]
    compose = _compose()["services"]
    assert compose["dashboard"]["ports"] == ["8470:8470"]
    mount = "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert mount in compose["prometheus"]["volumes"]
    (service,) = [doc for _, doc in _manifests() if doc["kind"] == "Service"]
    assert service["metadata"]["name"] == "qubus-dashboard"
    assert service["metadata"]["annotations"]["prometheus.io/port"] == "8470"


def _identity(command: list[str]) -> str:
    if command[1] == "dashboard":
        return auth.DASHBOARD
    return auth.service_user(command[2], command[4] if len(command) == 5 else None)


def test_every_service_mounts_its_own_identity_from_a_secret() -> None:
    """Kubernetes: Secret qubus-creds (kustomize secretGenerator, from `qubus creds
    deploy/k8s/creds`) holds every seed, each Deployment mounts only its own; compose: one
    secret per identity; the NATS servers include the matching auth.conf."""
    kustomization = _yaml(K8S / "kustomization.yaml")
    generated = {g["name"]: g for g in kustomization["secretGenerator"]}
    seeds = {f"{_identity(_container(d)['command'])}.nk" for d in _deployments()}
    assert {Path(f).name for f in generated["qubus-creds"]["files"]} == seeds
    for deployment in _deployments():
        container = _container(deployment)
        [creds] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
        assert creds["secret"]["secretName"] == "qubus-creds"
        key = f"{_identity(container['command'])}.nk"
        assert creds["secret"]["items"] == [{"key": key, "path": "identity.nk"}]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == creds["name"]]
        seed = {"name": "QUBUS_NATS_NKEY", "value": f"{mount['mountPath']}/identity.nk"}
        assert seed in container["env"]
    assert generated["nats-auth"]["files"] == ["creds/auth.conf"]
    values = _yaml(DEPLOY / "helm" / "nats-values.yaml")
    [volume] = [p["value"] for p in values["podTemplate"]["patch"] if p["value"]["name"] == "auth"]
    assert volume["secret"]["secretName"] == "nats-auth"
    [mount] = [p["value"] for p in values["container"]["patch"] if p["value"]["name"] == "auth"]
    assert values["config"]["merge"]["$include"] == f"./{Path(mount['mountPath']).name}/auth.conf"

    compose = _compose()
    for service in _qubus_compose_services().values():
        identity = _identity(service["command"])
        assert service["secrets"] == [{"source": identity, "target": "identity.nk"}]
        assert compose["secrets"][identity] == {"file": f"./creds/{identity}.nk"}
        assert service["environment"]["QUBUS_NATS_NKEY"] == "/run/secrets/identity.nk"
    for name, server in compose["services"].items():
        if name.startswith("nats-"):
            assert "./creds/auth.conf:/etc/nats/auth.conf:ro" in server["volumes"]
