"""A Prometheus configuration that scrapes the local suite, from the one in ``deploy/``."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

import dreamsuite
from dreamsuite.errors import DreamsuiteError
from dreamsuite.launcher.processes import HOST
from dreamsuite.torchserve import free_port

__all__ = ["prometheus_config", "prometheus_argv"]


def _deploy_prometheus_dir() -> Path | None:
    """deploy/prometheus of a source checkout (absent from an installed wheel)."""
    folder = Path(dreamsuite.__file__).resolve().parents[1] / "deploy" / "prometheus"
    return folder if (folder / "prometheus.yml").is_file() else None


def prometheus_config(targets: dict[str, str], self_target: str,
                      scrape_interval: str = "5s") -> dict:
    """The deploy/ Prometheus config with its targets on loopback: each job keeps its name and
    labels, scrapes ``targets[job]`` instead; jobs with no local process are dropped."""
    folder = _deploy_prometheus_dir()
    if folder is None:
        config = {"global": {}, "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": ["x"]}]}
            for name in (*targets, "prometheus")]}
    else:
        config = yaml.safe_load((folder / "prometheus.yml").read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": scrape_interval,
                        "evaluation_interval": scrape_interval}
    local = {**targets, "prometheus": self_target}
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in local:
            job["static_configs"] = [{**sc, "targets": [local[job["job_name"]]]}
                                     for sc in job["static_configs"][:1]]
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def prometheus_argv(folder: Path, targets: dict[str, str],
                    host: str = HOST) -> tuple[list[str], dict[str, int], str]:
    """Write a local config into ``folder``; the command, its ports and its readiness URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise DreamsuiteError("--with-prometheus needs the `prometheus` binary on PATH "
                              "(Debian/Ubuntu: apt-get install prometheus)")
    port = free_port(host)
    folder.mkdir(parents=True, exist_ok=True)
    config = prometheus_config(targets, f"{host}:{port}")
    source = _deploy_prometheus_dir()
    for rules in config.get("rule_files", []):
        if source is not None and (source / rules).is_file():
            shutil.copy(source / rules, folder / rules)
    config["rule_files"] = [r for r in config.get("rule_files", []) if (folder / r).is_file()]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [binary, f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address={host}:{port}",
            "--storage.tsdb.retention.time=1d"]
    return argv, {"http": port}, f"http://{host}:{port}/-/ready"
