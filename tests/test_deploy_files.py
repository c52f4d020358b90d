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
