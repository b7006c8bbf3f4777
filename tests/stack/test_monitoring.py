"""Prometheus and Grafana of the stack: promtool accepts the config and every panel query, the
provisioning points at the dashboard, and each metric a panel queries is one the API exports."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from tests.support import debian_tool

from .conftest import ROOT, run

MONITORING = ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "heart-api.json"
# Grafana's variables, replaced by a plain duration so that promtool can parse the query
GRAFANA_RANGES = re.compile(r"\$\{?__(rate_interval|interval|range)\b\}?")
METRIC = re.compile(r"\bheart_api_[a-z0-9_]+\b")


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def test_prometheus_config_passes_promtool():
    result = run([debian_tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_api_service(resolved):
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    api_port = resolved["services"]["api"]["command"][-1]
    assert f"api:{api_port}" in targets


def test_every_dashboard_query_passes_promtool(tmp_path):
    queries = panel_queries()
    rules = [
        {"record": f"heart_dashboard:panel_{i}", "expr": GRAFANA_RANGES.sub("5m", expr)}
        for i, (_, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([debian_tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_dashboard_covers_the_issue():
    titles = " | ".join(title.lower() for title, _ in panel_queries())
    for topic in ("request", "p50", "p95", "p99", "error", "predictions by class", "model version"):
        assert topic in titles, f"no panel for {topic}"


def test_grafana_provisioning_matches_the_dashboard(resolved):
    datasource = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    (source,) = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
    provider = yaml.safe_load(
        (MONITORING / "grafana/provisioning/dashboards/heart-mlops.yaml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    mounts = dict(reversed(m.split(":")[:2]) for m in resolved["services"]["grafana"]["volumes"])
    assert mounts[path].endswith("monitoring/grafana/dashboards")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]


@pytest.fixture(scope="module")
def api_metrics(trained) -> str:
    """/metrics of the real API after a health check and predictions of both classes."""
    app_module = pytest.importorskip(
        "heart_mlops.api.app", reason="the API package (heart_mlops.api) is not there yet"
    )
    import pandas as pd
    from fastapi.testclient import TestClient

    from heart_mlops.data import FEATURES

    rows = pd.read_csv(ROOT / "data" / "heart.csv").drop_duplicates()
    rows = rows[(rows["ca"] < 4) & (rows["thal"] > 0)].head(200)
    instances = [{"features": [float(v) for v in row]} for row in rows[list(FEATURES)].values]
    with TestClient(app_module.create_app(trained["settings"])) as client:
        deadline = time.monotonic() + 60
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the API loaded no champion in 60 s"
            time.sleep(0.5)
        assert client.get("/health").status_code == 200
        response = client.post("/predict/batch", json={"instances": instances})
        assert response.status_code == 200, response.text
        client.post("/predict", json={"features": [1]})  # a 422, for the error panels
        return client.get("/metrics").text


def test_every_dashboard_metric_is_exported_by_the_api(api_metrics):
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in api_metrics.splitlines()
        if line and not line.startswith("#")
    }
    queried = {name for _, expr in panel_queries() for name in METRIC.findall(expr)}
    assert queried, "the dashboard queries no heart_api_* metric"
    assert queried <= exported, f"not in /metrics: {sorted(queried - exported)}"
    for label in ('prediction="0"', 'prediction="1"', 'route="/predict/batch"', 'status="422"'):
        assert label in api_metrics, label
