"""docker-compose.yml against the Compose Specification schema (vendored: compose-spec.json,
Apache-2.0, from the compose-spec project as shipped in the `dclint` npm package), plus the
suite's own rules. The machine has no Docker engine, so this is all static."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).with_name("compose-spec.json")).read_text())


def _errors(document: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_specification(compose):
    assert _errors(compose) == []


def test_the_schema_check_catches_mistakes(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["guide"]["helthcheck"] = broken["services"]["guide"].pop("healthcheck")
    assert any("helthcheck" in e for e in _errors(broken))


def test_images_are_pinned(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        assert not image.endswith(":latest") and ":" in image, f"{name}: {image} is not pinned"
    assert re.fullmatch(r"quay\.io/minio/minio:RELEASE\.[0-9T-]+Z", compose["services"]["minio"]
                        ["image"])
    assert compose["services"]["minio-init"]["image"].startswith("quay.io/minio/mc:RELEASE.")


def test_bucket_is_created_before_the_services_start(compose):
    services = compose["services"]
    assert "mc mb" in " ".join(services["minio-init"]["command"])
    for name in ("guide", "dream", "dream-cpu", "gan", "gan-cpu"):
        assert services[name]["depends_on"]["minio-init"]["condition"] == (
            "service_completed_successfully")


def test_dream_reserves_a_gpu_and_has_a_cpu_profile(compose):
    dream = compose["services"]["dream"]
    devices = dream["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and dream["profiles"] == ["gpu"]
    cpu = compose["services"]["dream-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert cpu["networks"]["default"]["aliases"] == ["dream"]


def test_torchserve_is_health_checked_through_its_grpc_ping(compose):
    test = compose["services"]["torchserve"]["healthcheck"]["test"]
    assert test[:5] == ["CMD", "dreamsuite", "health", "127.0.0.1:7070", "--torchserve"]
    assert compose["services"]["guide"]["depends_on"]["torchserve"]["condition"] == (
        "service_healthy")


def test_both_dream_profiles_reach_torchserve_for_one_pass_models(compose):
    for name in ("dream", "dream-cpu"):
        assert compose["services"][name]["environment"]["DREAMSUITE_TORCHSERVE"] == (
            "torchserve:7070")


def test_torchserve_management_goes_through_the_keyed_gateway_to_the_gan_service(compose):
    services = compose["services"]
    torchserve, gateway = services["torchserve"], services["torchserve-management"]
    assert "8081" in torchserve["expose"]
    assert not any("8081" in str(p) for s in services.values() for p in s.get("ports", []))
    assert gateway["network_mode"] == "service:torchserve"  # TorchServe's loopback is its own
    assert gateway["entrypoint"] == ["python", "-m", "dreamsuite.torchserve_gateway"]
    assert gateway["command"][gateway["command"].index("--upstream") + 1] == (
        "http://127.0.0.1:8085")
    # The model store both write is a volume; TorchServe's root stays read-only.
    store = "torchserve-models:/home/model-server/model-store"
    assert store in torchserve["volumes"] and store in gateway["volumes"]
    assert torchserve["read_only"] is True and gateway["read_only"] is True
    key = gateway["environment"]["DREAMSUITE_TORCHSERVE_MANAGEMENT_KEY"]
    holders = {name for name, s in services.items()
               if (s.get("environment") or {}).get("DREAMSUITE_TORCHSERVE_MANAGEMENT_KEY")}
    assert holders == {"torchserve-management", "gan", "gan-cpu"}
    for name in ("gan", "gan-cpu"):
        env = services[name]["environment"]
        assert env["DREAMSUITE_TORCHSERVE_MANAGEMENT"] == "http://torchserve:8081"
        assert env["DREAMSUITE_TORCHSERVE_MANAGEMENT_KEY"] == key
        assert float(env["DREAMSUITE_TORCHSERVE_RESYNC"]) > 0  # a restarted TorchServe


def test_gan_service_follows_the_dream_service_in_each_profile(compose):
    services = compose["services"]
    gan, cpu = services["gan"], services["gan-cpu"]
    assert gan["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert gan["depends_on"]["dream"]["condition"] == "service_healthy"
    assert cpu["depends_on"]["dream-cpu"]["condition"] == "service_healthy"
    assert gan["deploy"] == services["dream"]["deploy"] and "deploy" not in cpu
    assert gan["image"] == services["dream"]["image"] and gan["build"] == services["dream"]["build"]
    assert cpu["networks"]["default"]["aliases"] == ["gan"]
    for service in (gan, cpu):
        assert service["command"] == ["gan"]
        assert service["ports"] == ["127.0.0.1:50053:50053"]
        env = service["environment"]
        assert env["DREAMSUITE_DREAM"] == "dream:50051"
        assert env["DREAMSUITE_GAN_LAUNCHER"] == "local"
        assert int(env["DREAMSUITE_GAN_MAX_JOBS"]) >= 1
        # Trainers are children of the service: they get time to checkpoint on shutdown.
        assert service["stop_grace_period"] == "90s"
        roots = env["DREAMSUITE_GAN_FOLDER_ROOTS"].split(":")
        mounted = {v.rsplit(":", 2)[1] for v in service["volumes"] if v.endswith(":ro")}
        assert set(roots) <= mounted


@pytest.mark.parametrize("name", ["guide", "dream", "dream-cpu", "gan", "gan-cpu"])
def test_services_are_health_checked_through_grpc_health(compose, name):
    service = compose["services"][name]
    test = service["healthcheck"]["test"]
    env = service["environment"]
    port = next(v for k, v in env.items() if k.endswith("_PORT") and "METRICS" not in k)
    assert test[:3] == ["CMD", "dreamsuite", "health"] and test[3].endswith(f":{port}")
    assert service["read_only"] is True


def test_prometheus_scrapes_every_metrics_port(compose):
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    services = compose["services"]
    for name, host in (("guide", "guide"), ("dream", "dream"), ("dream-cpu", "dream"),
                       ("gan", "gan"), ("gan-cpu", "gan")):
        env = services[name]["environment"]
        port = next(v for k, v in env.items() if k.endswith("_METRICS_PORT"))
        assert f"{host}:{port}" in targets
    assert "torchserve:8082" in targets
    mounted = " ".join(services["prometheus"]["volumes"])
    assert "./deploy/prometheus:/etc/prometheus" in mounted


def test_grafana_dashboard_is_provisioned_for_the_dream_service(compose):
    volumes = " ".join(compose["services"]["grafana"]["volumes"])
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning" in volumes
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/dreamsuite.yml").read_text())
    assert provider["providers"][0]["options"]["path"] in volumes
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/dreamsuite.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for family in ("grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
                   "dream_queue_depth", 'grpc_code!="OK"'):
        assert family in exprs, f"dashboard shows no {family}"
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {
        datasource["datasources"][0]["uid"]}
