"""POST /feedback, `heart-mlops feedback` and `heart-mlops log export`: outcomes joined to the
logged predictions."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient

from heart_mlops.api import create_app
from heart_mlops.api.spool import PredictionLog
from heart_mlops.data import FEATURES
from tests.api.conftest import SEED, TOKEN, wait_until_ready
from tests.api.test_prediction_log import log_rows
from tests.support import free_port

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def log_settings(api_settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("feedback")
    return api_settings.model_copy(
        update={
            "prediction_log_uri": f"sqlite:///{root / 'log.db'}",
            "prediction_log_spool_dir": str(root / "spool"),
        }
    )


@pytest.fixture(scope="module")
def client(log_settings):
    with TestClient(create_app(log_settings)) as test_client:
        wait_until_ready(test_client)
        yield test_client


def answered(client, count: int = 1) -> list[str]:
    """The request ids of `count` rows answered and written to the log."""
    body = {"instances": [{"features": SEED}] * count}
    ids = [p["request_id"] for p in client.post("/predict/batch", json=body).json()["predictions"]]
    url = client.app.state.settings.prediction_log_url
    deadline = time.monotonic() + 5
    while not set(ids) <= {r["request_id"] for r in log_rows(url, 0)}:
        assert time.monotonic() < deadline, "not written within 5 s"
        time.sleep(0.05)
    return ids


def test_an_outcome_is_recorded_once_unless_replaced(client):
    (request_id,) = answered(client)
    body = {"request_id": request_id, "outcome": 1, "observed_at": "2026-03-01T10:00:00"}
    first = client.post("/feedback", json=body, headers=AUTH)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "request_id": request_id,
        "outcome": 1,
        "observed_at": "2026-03-01T10:00:00+00:00",  # no zone: UTC
        "status": "recorded",
    }
    again = client.post("/feedback", json=body | {"outcome": 0}, headers=AUTH)
    assert again.status_code == 409
    assert again.json()["errors"][0]["field"] == "request_id"
    replaced = client.post("/feedback", json=body | {"outcome": 0, "replace": True}, headers=AUTH)
    assert replaced.status_code == 200 and replaced.json()["status"] == "replaced"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"request_id": "never-answered", "outcome": 1}, 404, "request_id"),
        ({"request_id": "x", "outcome": 2}, 422, "outcome"),
        ({"request_id": "x", "outcome": True}, 422, "outcome"),
        ({"request_id": "x", "outcome": 1, "observed_at": "yesterday"}, 422, "observed_at"),
        ({"request_id": "x", "outcome": 1, "replace": "yes"}, 422, "replace"),
        ({"outcome": 1}, 422, "request_id"),
        ({"request_id": "x", "outcome": 1, "token": "s"}, 422, "token"),
    ],
)
def test_bad_feedback_is_refused_naming_the_field(client, body, status, field):
    answer = client.post("/feedback", json=body, headers=AUTH)
    assert answer.status_code == status, answer.text
    errors = answer.json()["errors"]
    assert [e["field"] for e in errors] == [field]
    assert {"field", "value", "message", "allowed"} <= errors[0].keys()


def test_feedback_needs_the_token(client):
    answer = client.post("/feedback", json={"request_id": "x", "outcome": 1})
    assert answer.status_code == 401
    wrong = client.post(
        "/feedback", json={"request_id": "x", "outcome": 1}, headers={"Authorization": "Bearer n"}
    )
    assert wrong.status_code == 401


def test_an_outcome_for_a_row_still_spooled_is_accepted_and_joined_later(
    client, monkeypatch, log_settings, tmp_path
):
    monkeypatch.setattr(PredictionLog, "_move_own", lambda self: None)  # the writer stalls
    answer = client.post("/predict", json={"features": SEED}).json()
    pending = client.post(
        "/feedback", json={"request_id": answer["request_id"], "outcome": 1}, headers=AUTH
    )
    assert pending.status_code == 202 and pending.json()["status"] == "pending"
    monkeypatch.undo()  # the writer moves the spool again
    deadline = time.monotonic() + 5
    while answer["request_id"] not in {r["request_id"] for r in log_rows(client_url(client), 0)}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    out = tmp_path / "log.csv"
    done = run_cli("log", "export", str(out), "--role", "champion", settings=log_settings)
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out)
    row = frame.set_index("request_id").loc[answer["request_id"]]
    assert row["outcome"] == 1 and row["role"] == "champion"
    assert row["probability"] == pytest.approx(answer["probability"])
    assert [row[name] for name in FEATURES] == pytest.approx(SEED)
    assert row["received_at"].endswith("+00:00")
    parquet = tmp_path / "log.parquet"
    done = run_cli("log", "export", str(parquet), "--since", "2000-01-01", settings=log_settings)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_parquet(parquet)) == len(frame)
    empty = run_cli(
        "log", "export", str(out), "--until", "2000-01-01T00:00:00Z", settings=log_settings
    )
    assert empty.returncode == 0 and len(pd.read_csv(out)) == 0


def client_url(client) -> str:
    return client.app.state.settings.prediction_log_url


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "soon"], "--since/--until: 'soon' is not an ISO 8601 time"),
        (["--role", "boss"], "--role 'boss': allowed champion, challenger"),
        (["--role", "champion", "--until", "2026-01-01", "OUT.txt"], "write .parquet or .csv"),
    ],
)
def test_log_export_names_a_bad_option(log_settings, tmp_path, args, message):
    out = [] if any(a.startswith("OUT") for a in args) else [str(tmp_path / "x.csv")]
    args = [str(tmp_path / a) if a.startswith("OUT") else a for a in args]
    done = run_cli("log", "export", *out, *args, settings=log_settings)
    assert done.returncode != 0 and message in " ".join(done.stderr.split())


def run_cli(*args: str, settings, **environment: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEART_MLOPS_")}
    env |= {
        "HEART_MLOPS_HOME": str(settings.home_dir),
        "HEART_MLOPS_PREDICTION_LOG_URI": settings.prediction_log_url,
        "HEART_MLOPS_API_TOKEN": TOKEN,
        "COLUMNS": "200",
        **environment,
    }
    return subprocess.run(
        [sys.executable, "-m", "heart_mlops.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_feedback_command_reports_each_row(client, log_settings, tmp_path):
    ids = answered(client, 2)
    csv = tmp_path / "outcomes.csv"
    csv.write_text(
        "request_id,outcome,observed_at\n"
        f"{ids[0]},1,2026-03-01T10:00:00Z\n"
        f"{ids[1]},2,\n"
        "never-answered,0,\n"
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            client.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )  # the app runs already (the client's lifespan)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        done = run_cli("feedback", str(csv), "--url", url, settings=log_settings)
        second = httpx.post(
            f"http://127.0.0.1:{port}/feedback",
            json={"request_id": ids[0], "outcome": 0},
            headers=AUTH,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    report = {key: next(line for line in lines if key in line) for key in (*ids, "never-answered")}
    assert "201" in report[ids[0]] and "recorded" in report[ids[0]]
    assert "422" in report[ids[1]] and "outcome" in report[ids[1]]
    assert "404" in report["never-answered"]
    assert "1 of 3 outcomes recorded" in " ".join(done.stderr.split())
    assert second.status_code == 409
