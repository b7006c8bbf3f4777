"""`heart-mlops monitor`: drift and live performance of prediction-log windows.

Two streams (tests/monitoring_streams.py) are replayed through the API over real HTTP, their
outcomes fed back with POST /feedback, into a log on SQLite and on the machine's PostgreSQL
(a database of the test's own); then `pipeline.monitor` reads the windows on the session's
MLflow store (the `trained` fixture)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from heart_mlops import monitoring, predictionlog, registry, storage
from heart_mlops.data import FEATURES
from heart_mlops.errors import HeartMlopsError
from heart_mlops.pipeline import expire_predictions, monitor
from heart_mlops.settings import Settings
from tests.api.conftest import register_champion, serving
from tests.monitoring_streams import HOLDOUT_ROWS, holdout_stream, shifted_stream
from tests.support import fitted_candidate, heart_split

TOKEN = "monitoring-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
UTC = dt.UTC


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def log_url(request, tmp_path_factory):
    """A prediction-log database of this module's own: SQLite, or a fresh PostgreSQL database
    on the machine's server (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('monitor-log') / 'log.db'}"
        return
    name = f"heart_monitor_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _replay(url: str, stream) -> list[str]:
    """Send `stream` to the API at `url` in batches of 16, then each outcome to /feedback.
    -> the request ids, in the stream's order."""
    ids = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for at in range(0, len(stream), 16):
            chunk = stream[at : at + 16]
            answer = http.post(
                "/predict/batch", json={"instances": [{"features": x} for x, _ in chunk]}
            )
            assert answer.status_code == 200, answer.text
            ids += [p["request_id"] for p in answer.json()["predictions"]]
        for request_id, (_, outcome) in zip(ids, stream, strict=True):
            fed = http.post(
                "/feedback", json={"request_id": request_id, "outcome": outcome}, headers=AUTH
            )
            assert fed.status_code in (201, 202), fed.text
    return ids


def _wait_for_log(url: str, rows: int, timeout: float = 30.0) -> None:
    """Until the log holds `rows` champion records, each with its outcome."""
    engine = predictionlog.create_log_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                frame = predictionlog.read_log(engine, predictionlog.Window(role="champion"))
                done = len(frame) >= rows and frame["outcome"].notna().sum() >= rows
            except HeartMlopsError:  # no table yet
                done = False
            if done:
                return
            assert time.monotonic() < deadline, f"the log did not reach {rows} rows with outcomes"
            time.sleep(0.1)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def replayed(trained, log_url, tmp_path_factory):
    """The holdout stream then the shifted stream sent through a served API, outcomes fed
    back. -> {"settings": monitoring settings, "holdout": (start, end), "shifted": (start,
    end)}: each stream's window."""
    root = tmp_path_factory.mktemp("monitor-spool")
    settings = trained["settings"].model_copy(
        update={
            "api_token": SecretStr(TOKEN),
            "prediction_log_uri": log_url,
            "prediction_log_spool_dir": str(root / "spool"),
            "drift_min_rows": 50,
            "live_min_outcomes": 30,
        }
    )
    engine = predictionlog.create_log_engine(log_url)
    predictionlog.migrate(engine)  # as `heart-mlops serve` does before its workers start
    engine.dispose()
    with serving(settings) as url:
        start = dt.datetime.now(UTC)
        _replay(url, holdout_stream())
        middle = dt.datetime.now(UTC)
        _replay(url, shifted_stream())
        end = dt.datetime.now(UTC) + dt.timedelta(milliseconds=1)
        _wait_for_log(log_url, 2 * HOLDOUT_ROWS)
    return {"settings": settings, "holdout": (start, middle), "shifted": (middle, end)}


def _tables(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    engine = predictionlog.create_log_engine(settings.prediction_log_url)
    with engine.connect() as connection:
        windows = pd.read_sql(sa.select(predictionlog.MONITORING_WINDOWS), connection)
        features = pd.read_sql(sa.select(predictionlog.MONITORING_FEATURES), connection)
    engine.dispose()
    return windows, features


def test_holdout_rows_show_no_drift_and_live_metrics_with_intervals(replayed):
    settings = replayed["settings"]
    start, end = replayed["holdout"]
    result = monitor(settings, since=start, until=end, now=end)
    assert result.rows == HOLDOUT_ROWS
    assert result.dataset_drift is False and result.drift_share < settings.drift_share_threshold
    assert not result.triggered and result.trigger_reason.startswith("no trigger")
    live = result.live
    assert live["outcomes"] == HOLDOUT_ROWS
    for name in ("roc_auc", "brier", "calibration_intercept", "calibration_slope", "positive_rate"):
        figure = live[name]
        assert figure["low"] <= figure["value"] <= figure["high"], (name, figure)
    assert live["roc_auc"]["value"] > settings.live_roc_auc_floor
    assert live["holdout"]["roc_auc"]["holdout"] is not None
    summary = storage.read_json(result.summary_uri)
    assert summary["rows"] == HOLDOUT_ROWS and summary["mlflow_run_id"] == result.mlflow_run_id
    assert "<html" in storage.read_bytes(result.report_uri).decode()[:2000].lower()
    windows, features = _tables(settings)
    row = windows[windows["mlflow_run_id"] == result.mlflow_run_id].iloc[0]
    assert row["predictions"] == HOLDOUT_ROWS and row["outcomes"] == HOLDOUT_ROWS
    assert row["live_roc_auc_low"] <= row["live_roc_auc"] <= row["live_roc_auc_high"]
    assert not row["triggered"]
    assert sorted(features[features["window_id"] == row["id"]]["feature"]) == sorted(FEATURES)


def test_shifted_rows_drift_name_the_features_and_trigger_then_the_cooldown_holds(replayed):
    settings = replayed["settings"]
    start, end = replayed["shifted"]
    result = monitor(settings, since=start, until=end, now=end)
    assert result.rows == HOLDOUT_ROWS and result.dataset_drift is True
    assert result.drift_share >= settings.drift_share_threshold
    # changed on purpose: age, cp, thal (values); chol, ca, trestbps (missing pattern)
    assert {"age", "cp", "thal", "chol", "ca", "trestbps"} <= set(result.drifted_features)
    assert result.triggered and result.trigger_reason.startswith("data drift")
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(result.mlflow_run_id)
    assert run.data.tags[registry.TAG_PREFIX + "triggered"] == "true"
    assert run.data.metrics["drift_share"] == pytest.approx(result.drift_share)
    windows, features = _tables(settings)
    row = windows[windows["mlflow_run_id"] == result.mlflow_run_id].iloc[0]
    assert row["triggered"] and row["dataset_drift"]
    chol = features[(features["window_id"] == row["id"]) & (features["feature"] == "chol")]
    assert chol["missing_drifted"].item() and chol["missing_share"].item() > 0.2

    # the same window again decides as before; another one an hour later is held back
    again = monitor(settings, since=start, until=end, now=end)
    assert again.triggered
    later = end + dt.timedelta(hours=1)
    held = monitor(settings, since=replayed["holdout"][0], until=end, now=later)
    assert held.dataset_drift and not held.triggered
    assert held.trigger_reason.startswith("cooldown"), held.trigger_reason
    after = monitor(
        settings, since=replayed["holdout"][0], until=end, now=later + dt.timedelta(days=1)
    )
    assert after.triggered


def test_an_empty_window_succeeds_and_triggers_nothing(replayed):
    settings = replayed["settings"]
    long_ago = dt.datetime(2020, 1, 1, tzinfo=UTC)
    result = monitor(settings, since=long_ago, until=long_ago + dt.timedelta(hours=1))
    assert result.rows == 0 and not result.dataset_drift and not result.triggered
    assert result.drift_reason == "no predictions in window" and result.live is None
    assert result.report_uri is None


def test_too_few_rows_report_no_drift_and_say_why(replayed):
    settings = replayed["settings"].model_copy(update={"drift_min_rows": 1000})
    start, end = replayed["shifted"]
    result = monitor(settings, since=start, until=end, now=end)
    assert result.dataset_drift is False and result.drift_share is None
    assert result.drift_reason == f"not enough rows ({HOLDOUT_ROWS} < 1000)"
    assert not result.triggered


def test_the_json_output_is_one_object_and_the_summary_prints(replayed):
    settings = replayed["settings"]
    start, end = replayed["holdout"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEART_MLOPS_")}
    env |= {
        "HEART_MLOPS_HOME": str(settings.home_dir),
        "HEART_MLOPS_PREDICTION_LOG_URI": settings.prediction_log_url,
        "HEART_MLOPS_DRIFT_MIN_ROWS": "50",
        "HEART_MLOPS_BOOTSTRAP_SAMPLES": "100",
    }
    command = [sys.executable, "-m", "heart_mlops.cli", "monitor"]
    window = ["--since", start.isoformat(), "--until", end.isoformat()]
    done = subprocess.run([*command, *window, "--json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # one object and nothing else
    assert isinstance(document, dict) and done.stdout.strip().count("\n") == 0
    for key in ("rows", "dataset_drift", "drift_share", "drifted_features", "live", "triggered"):
        assert key in document
    assert document["rows"] == HOLDOUT_ROWS and document["trigger_reason"]
    shown = subprocess.run([*command, *window], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "dataset drift: false" in shown.stdout
    assert "retrain triggered: false" in shown.stdout
    bad = subprocess.run(
        [*command, "--since", "yesterday"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 1 and "--since" in bad.stderr and "'yesterday'" in bad.stderr


def test_a_version_without_reference_data_fails_naming_it(fresh_settings, tmp_path):
    """A version logged before references were stored: a clear error, nothing triggered."""
    train, holdout = heart_split()
    name = "monitor-no-reference"
    model = fitted_candidate("logistic_regression", train)
    settings = register_champion(fresh_settings, model, name, holdout[list(FEATURES)]).model_copy(
        update={"prediction_log_uri": f"sqlite:///{tmp_path / 'log.db'}"}
    )
    engine = predictionlog.create_log_engine(settings.prediction_log_url)
    predictionlog.migrate(engine)
    at = dt.datetime(2026, 1, 1, 12, tzinfo=UTC)
    entry = {"t": at.timestamp(), "role": "champion", "x": [x for x, _ in holdout_stream(5)],
             "ids": [uuid.uuid4().hex for _ in range(5)], "p": [0.5] * 5, "y": [1] * 5,
             "thr": 0.5, "name": name, "v": "1", "w": "test"}  # fmt: skip
    predictionlog.insert_rows(engine, predictionlog.rows_of_entries([entry], "sqlite"))
    with pytest.raises(HeartMlopsError, match=f"version 1 of '{name}' has no reference data"):
        monitor(settings, since=at, until=at + dt.timedelta(hours=1))
    windows, _ = _tables(settings)
    assert windows.empty  # nothing written, nothing triggered


# --- the pure parts ------------------------------------------------------------------------------


def test_the_default_window_is_one_schedule_period_ending_now():
    now = dt.datetime(2026, 5, 4, 10, 20, tzinfo=UTC)
    assert monitoring.schedule_window("@hourly", now) == (now - dt.timedelta(hours=1), now)
    assert monitoring.schedule_window("*/15 * * * *", now)[0] == now - dt.timedelta(minutes=15)
    assert monitoring.schedule_window(None, now)[0] == now - dt.timedelta(hours=1)
    with pytest.raises(HeartMlopsError, match="'every hour' is not a cron expression"):
        monitoring.schedule_window("every hour", now)


def test_a_changed_missing_share_is_drift_and_an_equal_one_is_not():
    reference = pd.DataFrame({"chol": [200.0] * 95 + [np.nan] * 5})
    same = pd.DataFrame({"chol": [210.0] * 57 + [np.nan] * 3})
    more = pd.DataFrame({"chol": [210.0] * 36 + [np.nan] * 24})
    assert monitoring.missing_shift(same, reference, "chol")[2] > monitoring.MISSING_ALPHA
    share, reference_share, p_value = monitoring.missing_shift(more, reference, "chol")
    assert (share, reference_share) == (0.4, 0.05) and p_value < 0.001


def _drift(rows: int, drifted: bool) -> monitoring.DriftSummary:
    return monitoring.DriftSummary(rows, drifted, "test", 0.5 if drifted else 0.0, [])


def test_the_decision_needs_drift_or_a_low_live_roc_auc_and_respects_the_cooldown():
    now = dt.datetime(2026, 5, 4, 10, tzinfo=UTC)
    rules = {"roc_auc_floor": 0.75, "min_outcomes": 50, "now": now, "cooldown_hours": 24}
    low = {"outcomes": 80, "roc_auc": {"value": 0.6, "low": 0.5, "high": 0.7}}
    few = {"outcomes": 10, "roc_auc": {"value": 0.6, "low": 0.4, "high": 0.8}}
    assert (
        monitoring.retrain_decision(_drift(300, False), None, last_trigger=None, **rules)[0]
        is False
    )
    triggered, reason = monitoring.retrain_decision(
        _drift(300, False), low, last_trigger=None, **rules
    )
    assert triggered and "live ROC-AUC 0.600 below the floor 0.75 on 80 outcomes" in reason
    assert not monitoring.retrain_decision(_drift(300, False), few, last_trigger=None, **rules)[0]
    recent = now - dt.timedelta(hours=3)
    held, reason = monitoring.retrain_decision(
        _drift(300, True), None, last_trigger=recent, **rules
    )
    assert not held and reason.startswith("cooldown")
    old = now - dt.timedelta(hours=25)
    assert monitoring.retrain_decision(_drift(300, True), None, last_trigger=old, **rules)[0]


def test_the_challenger_is_compared_on_the_rows_both_scored():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    champion = pd.DataFrame({"request_id": [f"r{i}" for i in range(200)], "outcome": y,
                             "probability": np.clip(y * 0.6 + rng.random(200) * 0.4, 0, 1),
                             "prediction": 0, "threshold": 0.5, "model_version": "2"})  # fmt: skip
    champion["prediction"] = (champion["probability"] >= 0.5).astype(int)
    challenger = champion.iloc[:150].assign(probability=rng.random(150), model_version="3")
    challenger["prediction"] = (challenger["probability"] >= 0.5).astype(int)
    found = monitoring.shadow_comparison(champion, challenger, samples=100, seed=1)
    assert found["rows"] == 150 and found["challenger_version"] == "3"
    expected = np.mean(
        champion["prediction"][:150].to_numpy() == challenger["prediction"].to_numpy()
    )
    assert found["agreement"] == pytest.approx(expected)
    assert found["champion"]["roc_auc"]["value"] > found["challenger"]["roc_auc"]["value"]
    assert found["challenger"]["outcomes"] == 150
    assert monitoring.shadow_comparison(champion, challenger.iloc[:0], samples=10, seed=1) is None
    # the challenger scored every row: the champion's own live figures are the same figures
    everything = champion.assign(model_version="3")
    live = monitoring.live_metrics(y, champion["probability"].to_numpy(), 0.5, samples=100, seed=1)
    reused = monitoring.shadow_comparison(
        champion, everything, samples=100, seed=1, champion_live=live
    )
    assert reused["champion"] is live
    computed = monitoring.shadow_comparison(champion, everything, samples=100, seed=1)
    assert json.dumps(computed["champion"], sort_keys=True) == json.dumps(live, sort_keys=True)


def test_expired_predictions_are_deleted(tmp_path):
    settings = Settings(home=tmp_path, prediction_log_retention_days=30)
    engine = predictionlog.create_log_engine(settings.prediction_log_url)
    predictionlog.migrate(engine)
    now = dt.datetime(2026, 5, 4, tzinfo=UTC)
    entries = [{"t": (now - dt.timedelta(days=days)).timestamp(), "role": "champion",
                "x": [holdout_stream(1)[0][0]], "ids": [f"r{days}"], "p": [0.2], "y": [0],
                "thr": 0.5, "name": "m", "v": "1", "w": "t"} for days in (1, 40)]  # fmt: skip
    predictionlog.insert_rows(engine, predictionlog.rows_of_entries(entries, "sqlite"))
    assert expire_predictions(settings, now=now) == 1
    assert list(predictionlog.read_log(engine)["request_id"]) == ["r1"]


def test_the_api_does_not_import_evidently():
    code = (
        "import sys\n"
        "from heart_mlops.api import create_app\n"
        "from heart_mlops.settings import Settings\n"
        "import heart_mlops.pipeline, heart_mlops.cli, heart_mlops.monitoring\n"
        "create_app(Settings())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'evidently'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
