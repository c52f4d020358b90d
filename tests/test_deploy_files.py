"""The deployment files parse and say what the issue asks (Docker itself does not run here)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]


def _compose(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_compose_has_every_service_with_a_healthcheck() -> None:
    services = _compose(REPO / "docker-compose.yml")["services"]
    assert set(services) == {"redis", "postgres", "flower", "cli", "worker-cpu", "worker-gpu"}
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_redis_has_a_password_and_an_append_only_file() -> None:
    redis = _compose(REPO / "docker-compose.yml")["services"]["redis"]
    cmd = " ".join(redis["command"])
    assert "--appendonly yes" in cmd and "--requirepass ${REDIS_PASSWORD:?" in cmd
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_postgres_keeps_its_data_and_workers_use_it_through_the_env() -> None:
    doc = _compose(REPO / "docker-compose.yml")
    pg = doc["services"]["postgres"]
    assert any("/var/lib/postgresql/data" in v for v in pg["volumes"])
    assert "postgres-data" in doc["volumes"]
    for name in ("worker-cpu", "worker-gpu", "cli", "flower"):
        env = doc["services"][name]["environment"]
        assert env["GLOPER_DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["GLOPER_DATABASE_URL"]
        assert re.match(r"redis://:\$\{REDIS_PASSWORD", env["GLOPER_BROKER_URL"])


def test_flower_is_behind_basic_auth() -> None:
    flower = _compose(REPO / "docker-compose.yml")["services"]["flower"]
    assert flower["command"][:2] == ["gloper", "flower"]
    assert "FLOWER_PASSWORD:?" in flower["environment"]["GLOPER_FLOWER_PASSWORD"]


def _reserves_gpus(svc: dict) -> bool:
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    return any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_gpu_worker_reserves_nvidia_devices_and_binds_per_card() -> None:
    services = _compose(REPO / "docker-compose.yml")["services"]
    gpu, cpu = services["worker-gpu"], services["worker-cpu"]
    assert _reserves_gpus(gpu) and gpu["command"] == ["gloper", "worker", "--gpus", "all"]
    assert "deploy/Dockerfile.cuda" == gpu["build"]["dockerfile"]
    assert "deploy" not in cpu and cpu["command"][:4] == ["gloper", "worker", "--gpus", "cpu"]
    assert (REPO / gpu["build"]["dockerfile"]).is_file() and (REPO / cpu["build"]["dockerfile"]).is_file()


def test_gpu_node_joins_the_central_services() -> None:
    node = _compose(REPO / "deploy" / "gpu-node.compose.yml")["services"]
    assert set(node) == {"worker-gpu"}
    w = node["worker-gpu"]
    assert _reserves_gpus(w) and w["healthcheck"]["test"]
    assert "${CENTRAL_HOST:?" in w["environment"]["GLOPER_DATABASE_URL"]
    assert "${CENTRAL_HOST:?" in w["environment"]["GLOPER_BROKER_URL"]


def test_systemd_unit_runs_gloper_worker() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "deploy" / "gloper-worker.service")
    assert unit["Service"]["ExecStart"].endswith("gloper worker --gpus all")
    assert unit["Service"]["EnvironmentFile"] and unit["Install"]["WantedBy"] == "multi-user.target"


def test_images_install_a_pinned_torch_before_the_package() -> None:
    for name, index in (("Dockerfile.cpu", "whl/cpu"), ("Dockerfile.cuda", "whl/cu")):
        text = (REPO / "deploy" / name).read_text()
        torch_at = text.index("pip install torch==2.13.0")
        assert index in text[torch_at:torch_at + 200]
        assert torch_at < text.index("pip install '.[queue]'")


def test_published_ports_bind_to_localhost_unless_told_and_examples_hold_no_secret() -> None:
    services = _compose(REPO / "docker-compose.yml")["services"]
    for name in ("redis", "postgres", "flower"):
        for port in services[name]["ports"]:
            assert port.startswith("${GLOPER_BIND:-127.0.0.1}:"), (name, port)
    env = dict(line.split("=", 1) for line in (REPO / "deploy" / "env.example").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["POSTGRES_PASSWORD"] == env["REDIS_PASSWORD"] == env["FLOWER_PASSWORD"] == ""


# The fields deploy/k8s-gpu-worker.yaml may use, per Kubernetes object (apps/v1, core/v1):
# a misspelt key (kubectl would reject it against the cluster's schema) fails here.
_K8S_FIELDS = {
    "pod": {"serviceAccountName", "terminationGracePeriodSeconds", "nodeSelector", "tolerations",
            "securityContext", "initContainers", "containers", "volumes"},
    "container": {"name", "image", "command", "args", "env", "resources", "volumeMounts", "livenessProbe",
                  "readinessProbe", "startupProbe", "securityContext"},
    "volume": {"name", "emptyDir", "secret", "configMap"},  # nothing shared between nodes
}


def _k8s_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all((REPO / "deploy" / "k8s-gpu-worker.yaml").read_text()) if d]


def test_k8s_gpu_worker_takes_one_card_per_pod_and_shares_no_filesystem() -> None:
    docs = {d["kind"]: d for d in _k8s_docs()}
    assert set(docs) == {"ServiceAccount", "Deployment"} and docs["Deployment"]["apiVersion"] == "apps/v1"
    dep = docs["Deployment"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    pod = dep["spec"]["template"]["spec"]
    assert set(pod) <= _K8S_FIELDS["pod"], set(pod) - _K8S_FIELDS["pod"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    (worker,) = pod["containers"]
    for c in pod["containers"] + pod["initContainers"]:
        assert set(c) <= _K8S_FIELDS["container"], set(c) - _K8S_FIELDS["container"]
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in pod["volumes"]}
    for v in pod["volumes"]:
        assert set(v) <= _K8S_FIELDS["volume"], v  # no hostPath, NFS or PVC: nothing shared
    limits, requests = worker["resources"]["limits"], worker["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == 1 and requests["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert worker["command"] == ["gloper", "worker", "--gpus", "all", "--name", "gpu"]
    from workers.launcher import plan_workers

    (node,) = plan_workers("all", available=["0"], name="gpu")  # the one card the pod sees
    probe = " ".join(worker["livenessProbe"]["exec"]["command"])
    assert f"-d {node.node.replace('%h', '$(hostname)')} " in probe
    env = {e["name"]: e for e in worker["env"]}
    assert env["GLOPER_RESULTS_DIR"]["value"].startswith("s3://")
    for secret in ("GLOPER_DATABASE_URL", "GLOPER_BROKER_URL"):
        assert "secretKeyRef" in env[secret]["valueFrom"] and "value" not in env[secret]
    assert not any(k.startswith("AWS_") and k not in ("AWS_DEFAULT_REGION", "AWS_REGION") for k in env)  # role only
    from gloper_jobs.settings import Settings

    values = {k: e["value"] for k, e in env.items() if "value" in e}
    settings = Settings(**{k[len("GLOPER_"):].lower(): v for k, v in values.items() if k.startswith("GLOPER_")})
    assert settings.results_url == env["GLOPER_RESULTS_DIR"]["value"]  # the settings accept every value
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_grace
    assert pod["initContainers"][0]["command"] == ["gloper", "models", "install"]
    assert "pip install '.[s3]'" in (REPO / "deploy" / "Dockerfile.cuda").read_text()  # s3fs in the image
