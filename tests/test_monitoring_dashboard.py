"""The Grafana "model health" dashboard: every panel's and annotation's SQL, with Grafana's
macros expanded as Grafana expands them, runs on real PostgreSQL (a database of the test's
own) holding what two real `pipeline.monitor` runs wrote, and returns rows."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from heart_mlops import predictionlog, registry
from heart_mlops.data import FEATURES, missing_as_nan
from heart_mlops.pipeline import monitor
from tests.monitoring_streams import holdout_stream, shifted_stream

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "monitoring" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "model-health.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "heart-monitoring.yaml"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
START = dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC)  # the first window; the second follows


def queries() -> list[tuple[str, str]]:
    """(panel or annotation name, its raw SQL) of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = [
        (panel["title"], target["rawSql"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    found += [(a["name"], a["target"]["rawSql"]) for a in dashboard["annotations"]["list"]]
    return found


def expand_macros(sql: str, start: dt.datetime, end: dt.datetime) -> str:
    """Grafana's PostgreSQL macros as Grafana expands them for the range [start, end]."""
    since, until = (f"'{t.strftime('%Y-%m-%dT%H:%M:%SZ')}'" for t in (start, end))
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN {since} AND {until}", sql)
    sql = re.sub(r"\$__time\(([^)]+)\)", r'\1 AS "time"', sql)
    sql = sql.replace("$__timeFrom()", since).replace("$__timeTo()", until)
    assert "$" not in sql, f"a macro this test does not expand: {sql}"
    return sql


@pytest.fixture(scope="module")
def monitored(trained):
    """Two hourly windows (holdout-like, then shifted) of champion and challenger rows with
    outcomes, in a PostgreSQL log of the test's own, each monitored by `pipeline.monitor`."""
    name = f"heart_dashboard_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    settings = trained["settings"].model_copy(
        update={
            "prediction_log_uri": f"{POSTGRES}/{name}",
            "drift_min_rows": 50,
            "live_min_outcomes": 30,
        }
    )
    engine = predictionlog.create_log_engine(settings.prediction_log_url)
    try:
        predictionlog.migrate(engine)
        registry.connect(settings)
        champion = registry.load_champion(settings)
        for hour, stream in enumerate((holdout_stream(), shifted_stream())):
            _log(engine, champion, stream, START + dt.timedelta(hours=hour))
            start = START + dt.timedelta(hours=hour)
            monitor(settings, since=start, until=start + dt.timedelta(hours=1))
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _log(engine, champion, stream, start: dt.datetime) -> None:
    """`stream` as the API logs it: the champion's answers, a challenger's (a coin flip
    version "shadow"), one row a second from `start`; and each outcome."""
    x = np.array([[np.nan if v is None else v for v in row] for row, _ in stream], dtype=float)
    used = pd.DataFrame(missing_as_nan(x.copy()), columns=list(FEATURES))
    p = champion.pipeline.predict_proba(used)[:, 1]
    shadow = np.random.default_rng(0).random(len(stream))
    entries = []
    for i, ((values, _), p_champion, p_challenger) in enumerate(
        zip(stream, p, shadow, strict=True)
    ):
        at = (start + dt.timedelta(seconds=i)).timestamp()
        for role, prob, version in (("champion", p_champion, champion.version),
                                    ("challenger", p_challenger, "shadow")):  # fmt: skip
            entries.append({"t": at, "role": role, "x": [values], "ids": [f"{start:%H}-{i}"],
                            "p": [float(prob)], "y": [int(prob >= 0.5)], "thr": 0.5,
                            "name": champion.model_name, "v": version, "w": "test"})  # fmt: skip
    predictionlog.insert_rows(engine, predictionlog.rows_of_entries(entries, "postgresql"))
    for i, (_, outcome) in enumerate(stream):
        predictionlog.record_outcome(engine, f"{start:%H}-{i}", outcome, start)


@pytest.mark.parametrize("name", [name for name, _ in queries()])
def test_every_query_returns_rows_from_what_monitor_wrote(monitored, name):
    sql = dict(queries())[name]
    expanded = expand_macros(sql, START - dt.timedelta(days=1), START + dt.timedelta(days=1))
    with monitored.connect() as connection:
        result = connection.execute(sa.text(expanded))
        columns, rows = list(result.keys()), result.fetchall()
    assert rows, f"{name}: no rows"
    if "time" in columns:
        assert all(row[columns.index("time")] is not None for row in rows)


def test_queries_outside_the_range_return_nothing(monitored):
    later = START + dt.timedelta(days=30)
    sql = dict(queries())["Retrain requests"]
    with monitored.connect() as connection:
        assert connection.execute(sa.text(expand_macros(sql, later, later))).fetchall() == []
        found = connection.execute(sa.text(expand_macros(sql, START, later))).fetchall()
    assert len(found) == 1 and "data drift" in found[0][1]  # the shifted window only


def test_the_dashboard_reads_only_the_monitoring_tables_through_its_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    (source,) = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    assert source["uid"] == "heart-monitoring" and source["type"] == "grafana-postgresql-datasource"
    # the connection comes from the environment: no host, user or secret in the file
    for value in (source["url"], source["user"], source["jsonData"]["database"]):
        assert value.startswith("$MONITORING_DB_")
    assert source["secureJsonData"]["password"] == "$MONITORING_DB_PASSWORD"
    uses = [panel["datasource"]["uid"] for panel in dashboard["panels"]]
    uses += [a["datasource"]["uid"] for a in dashboard["annotations"]["list"]]
    assert set(uses) == {source["uid"]}
    for name, sql in queries():
        tables = set(re.findall(r"\bFROM\s+(\w+)", sql, flags=re.IGNORECASE))
        assert tables <= {"monitoring_window", "monitoring_feature"}, (name, tables)
    titles = " | ".join(name.lower() for name, _ in queries())
    for topic in ("predictions per hour", "positive rate", "drift share", "most drifted",
                  "roc-auc", "calibration", "agreement", "retrain"):  # fmt: skip
        assert topic in titles, f"no panel for {topic}"
