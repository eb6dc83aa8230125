"""The prometheus-adapter rules the suite ships (deploy/k8s/monitoring) render and validate
strictly, produce every metric an HPA scales on, and query metric families that the services
really export (built on a fresh registry, so renaming a metric breaks this test)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from services.common.telemetry import GrpcServerMetrics
from services.dream.metrics import DreamMetrics
from services.gan.metrics import GanMetrics
from services.guide.metrics import GuideMetrics

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "monitoring"
CONFIGMAP = "dreamsuite-prometheus-adapter"
#: The labels the Kubernetes scrape job adds: they map series to namespaces and pods.
TARGET_LABELS = {"namespace", "pod"}
_SERIES = re.compile(r'^\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{.*\})?\s*$')
_NAME_LABEL = re.compile(r'__name__\s*=\s*"([A-Za-z_:][A-Za-z0-9_:]*)"')


def _tool(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    path = str(found) if found.exists() else shutil.which(name)
    if path is None:  # CI installs both: a missing tool fails, it never skips
        pytest.fail(f"{name} is not installed (kubectl ships with the machine image; "
                    "kubernetes-validate: pip install -e '.[dev]')")
    return path


@pytest.fixture(scope="module")
def adapter_rendered() -> str:
    proc = subprocess.run([_tool("kubectl"), "kustomize", str(MONITORING)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def rules(adapter_rendered) -> list[dict]:
    configmap = next(o for o in yaml.safe_load_all(adapter_rendered)
                     if o and o["kind"] == "ConfigMap" and o["metadata"]["name"] == CONFIGMAP)
    return yaml.safe_load(configmap["data"]["config.yaml"])["rules"]


@pytest.fixture(scope="module")
def exported() -> dict[str, tuple[str, set[str]]]:
    """Every series name the services export -> (its family's type, its label names)."""
    registry = CollectorRegistry()
    families = [GrpcServerMetrics(registry), DreamMetrics(registry),
                GuideMetrics(registry, "torchserve"), GanMetrics(registry)]
    suffixes = {"counter": ("_total",), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count")}
    out = {}
    for family in families:
        for metric in vars(family).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            described = metric.describe()[0]
            labels = set(metric._labelnames)  # no public accessor; describe() has no samples
            for suffix in suffixes[described.type]:
                out[described.name + suffix] = (described.type, labels)
    return out


def _series_name(rule: dict) -> str:
    query = rule["seriesQuery"]
    found = _SERIES.match(query) or _NAME_LABEL.search(query)
    assert found, f"cannot tell which metric {query!r} selects: name it (metric{{...}})"
    return found.group(1)


def _metric_name(rule: dict, series: str) -> str:
    """The name the adapter gives ``series`` (its ``name`` rule: ``matches`` defaults to
    ``.*``, ``as`` to ``$1`` with one capture group, else ``$0``)."""
    naming = rule.get("name") or {}
    pattern = re.compile(naming.get("matches") or ".*")
    template = naming.get("as") or ("$1" if pattern.groups == 1 else "$0")
    found = pattern.search(series)
    assert found, f"{pattern.pattern!r} does not match the series {series}"
    return found.expand(re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", template))


def _hpa_metrics(manifests) -> list[tuple[str, str, dict]]:
    """(overlay/HPA, metric name, selector labels) of every Pods or Object metric."""
    used = []
    for overlay, objects in manifests.items():
        for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
            for metric in hpa["spec"]["metrics"]:
                source = {"Pods": "pods", "Object": "object"}.get(metric["type"])
                if source:
                    target = metric[source]["metric"]
                    labels = (target.get("selector") or {}).get("matchLabels") or {}
                    used.append((f"{overlay}/{hpa['metadata']['name']}", target["name"], labels))
    return used


def test_the_adapter_rules_pass_kubernetes_validate_strict(adapter_rendered):
    proc = subprocess.run([_tool("kubernetes-validate"), "--strict", "-"], input=adapter_rendered,
                          capture_output=True, text=True, timeout=300)
    report = proc.stdout + proc.stderr
    bad = [line for line in report.splitlines() if not line.startswith("INFO")]
    assert proc.returncode == 0 and not bad, report  # a warning (unknown kind) fails too
    assert f"resource configmap/{CONFIGMAP} " in report, report
    configmap = next(o for o in yaml.safe_load_all(adapter_rendered) if o)
    assert configmap["metadata"]["namespace"] == "monitoring"  # where the policies admit it


def test_every_hpa_metric_is_produced_by_a_rule(manifests, rules, exported):
    produced = {}
    for rule in rules:
        series = _series_name(rule)
        produced[_metric_name(rule, series)] = (rule, series)
    used = _hpa_metrics(manifests)
    assert {"dream_queue_depth", "grpc_server_started_per_second"} <= {m for _, m, _ in used}
    for where, name, labels in used:
        assert name in produced, f"{where}: no adapter rule produces {name!r}"
        rule, series = produced[name]
        overrides = rule["resources"]["overrides"]
        assert overrides["pod"]["resource"] in ("pod", "pods"), f"{name}: not per pod"
        assert overrides["namespace"]["resource"] == "namespace", name
        # The selector filters series by their labels: each must be a label of the family.
        missing = set(labels) - exported[series][1]
        assert not missing, f"{where}: {series} has no label(s) {sorted(missing)}"


def test_every_rule_queries_a_family_the_services_export(rules, exported):
    assert rules
    for rule in rules:
        series = _series_name(rule)
        assert series in exported, (f"{rule['seriesQuery']!r}: no service exports {series} "
                                    f"(exported: {sorted(exported)})")
        for label in TARGET_LABELS:
            assert f'{label}!=""' in rule["seriesQuery"].replace(" ", ""), (series, label)
        assert set(rule["resources"]["overrides"]) == TARGET_LABELS, series
        query = rule["metricsQuery"]
        for field in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert field in query, f"{series}: metricsQuery lacks {field}"
        # rate() of a counter, a gauge as it is (or averaged over time).
        kind = exported[series][0]
        assert ("rate(" in query) == (kind == "counter"), f"{series} is a {kind}: {query}"
