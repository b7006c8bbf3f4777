"""The prediction log on SQLite: request ids in the answers, one record per answered row and
role, off the hot path (spool, writer thread), replay of a dead worker's spool, the switch."""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import time

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from heart_mlops import predictionlog
from heart_mlops.api import create_app
from heart_mlops.api.spool import PredictionLog, correlation_id
from heart_mlops.data import FEATURES
from tests.api.conftest import SEED, wait_until_ready
from tests.support import heavy_imports

MISSING_CA = [*SEED[:11], 4, SEED[12]]  # ca == 4: heart.csv's code for "not recorded"


def log_rows(url: str, expected: int, timeout: float = 5.0) -> list[dict]:
    """The log's records once there are `expected` of them (or what there is at the timeout)."""
    engine = predictionlog.create_log_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as connection:
                try:
                    rows = connection.execute(sa.select(predictionlog.PREDICTIONS)).mappings()
                    rows = [dict(row) for row in rows]
                except sa.exc.OperationalError:  # no table yet
                    rows = []
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)
    finally:
        engine.dispose()


@pytest.fixture
def log_settings(api_settings, tmp_path):
    return api_settings.model_copy(
        update={
            "prediction_log_uri": f"sqlite:///{tmp_path / 'log.db'}",
            "prediction_log_spool_dir": str(tmp_path / "spool"),
        }
    )


def counted(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_answered_row_is_one_record_with_the_id_of_its_answer(log_settings, tmp_path):
    refusals = {"route": "/predict", "reason": "invalid_input"}
    written, refused_before = (
        counted("heart_api_prediction_log_written_total"),
        counted("heart_api_refusals_total", **refusals),
    )
    with TestClient(create_app(log_settings)) as client:
        wait_until_ready(client)
        single = client.post(
            "/predict", json={"features": SEED}, headers={"X-Request-ID": "visit-42/a"}
        )
        batch = client.post(
            "/predict/batch",
            json={"instances": [{"features": SEED}, {"features": MISSING_CA}, {"features": SEED}]},
        )
        refused = client.post("/predict", json={"features": SEED[:5]})
        started = time.monotonic()
        rows = log_rows(log_settings.prediction_log_url, 4)
        waited = time.monotonic() - started
    assert single.status_code == 200 and batch.status_code == 200 and refused.status_code == 422
    answer = single.json()
    assert single.headers["X-Request-ID"] == answer["request_id"]
    ids = [answer["request_id"], *(p["request_id"] for p in batch.json()["predictions"])]
    assert len(set(ids)) == 4
    assert waited < 2.0  # a row reaches the database within 2 s of its answer
    by_id = {row["request_id"]: row for row in rows}
    assert sorted(by_id) == sorted(ids) and len(rows) == 4  # the refused one is not logged
    first = by_id[answer["request_id"]]
    assert first["role"] == "champion" and first["correlation_id"] == "visit-42/a"
    assert first["probability"] == answer["probability"]
    assert first["prediction"] == answer["prediction"]
    assert first["threshold"] == answer["threshold"]
    assert first["model_version"] == answer["model_version"]
    assert first["model_name"] == log_settings.model_name
    assert [first[name] for name in FEATURES] == SEED
    assert first["worker"].endswith(f":{os.getpid()}") and first["latency_ms"] > 0
    missing = by_id[ids[2]]
    assert missing["ca"] == 4 and missing["ca_used"] is None  # as received, as the model used it
    assert missing["correlation_id"] is None
    assert counted("heart_api_refusals_total", **refusals) == refused_before + 1
    assert counted("heart_api_prediction_log_written_total") >= written + 4
    # drained at shutdown: nothing left in the spool
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_switched_off_the_log_writes_nothing_and_answers_keep_their_ids(log_settings, tmp_path):
    settings = log_settings.model_copy(update={"prediction_log_enabled": False})
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        answer = client.post("/predict", json={"features": SEED})
    assert answer.status_code == 200 and answer.json()["request_id"]
    assert answer.headers["X-Request-ID"] == answer.json()["request_id"]
    assert not (tmp_path / "log.db").exists() and not (tmp_path / "spool").exists()


@pytest.mark.parametrize(
    ("value", "kept"),
    [("abc-123", True), ("a" * 128, True), ("a" * 129, False), ("x y", False), ("", False)],
)
def test_only_a_sane_client_request_id_is_kept(value, kept):
    assert (correlation_id(value) == value) is kept


class FakeModel:
    threshold, version, info = 0.5, "7", {"model_name": "m"}


def spool_rows(prediction_log: PredictionLog, first: int, count: int) -> list[str]:
    ids = [f"id-{n}" for n in range(first, first + count)]
    rows = [[float(v) for v in SEED]] * count
    prediction_log.append(
        ids, rows, [0.25] * count, [0] * count, FakeModel(), role="champion",
        received=time.time(), latency_ms=1.0,
    )  # fmt: skip
    return ids


def test_a_dead_workers_spool_is_replayed_once_and_a_live_ones_never(tmp_path):
    url, spool = f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "spool"
    predictionlog.migrate(predictionlog.create_log_engine(url))
    down = tmp_path / "down"  # a folder: SQLite cannot open it as a database
    down.mkdir()
    dead = PredictionLog(spool, f"sqlite:///{down}")
    dead.start()  # its database cannot be opened: everything stays spooled
    spool_rows(dead, 0, 30)
    time.sleep(0.5)
    # the process dies: its descriptors (and the lock) go, its files stay
    for fd in (dead._fd, dead._pos_fd, dead._lock_fd):
        os.close(fd)
    dead._stop.set()
    live = PredictionLog(spool, url)
    live.start()
    spool_rows(live, 100, 5)
    other = PredictionLog(spool, f"sqlite:///{down}")
    other.start()  # alive, its database down: its spool must not be replayed by `live`
    spool_rows(other, 200, 3)
    rows = log_rows(url, 35)
    assert sorted(r["request_id"] for r in rows) == sorted(
        [f"id-{n}" for n in range(30)] + [f"id-{n}" for n in range(100, 105)]
    )
    # the dead spool was replayed and removed; the live one's is still there
    assert other._files.jsonl.exists() and not dead._files.jsonl.exists()
    assert live.close() is True and not live._files.jsonl.exists()
    assert other.close(timeout=2) is False and other._files.jsonl.exists()
    # replaying a spool whose progress mark was lost writes nothing twice
    again = PredictionLog(spool, url)
    again._files.pos.unlink(missing_ok=True)
    with open(other._files.jsonl, "ab") as extra:
        line = {"ids": ["id-100"], "t": time.time(), "x": [SEED], "p": [0.25], "y": [0]}
        line |= {"thr": 0.5, "name": "m", "v": "7", "role": "champion", "w": "w", "ms": 1.0}
        extra.write(orjson.dumps(line) + b"\n")
    again.start()
    rows = log_rows(url, 38)
    assert again.close() is True
    ids = [r["request_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 38
    assert not list(spool.glob("*.jsonl"))
    assert all(math.isclose(r["probability"], 0.25) for r in rows)


def test_the_writer_process_writes_and_when_it_is_killed_nothing_is_lost_or_doubled(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    predictionlog.migrate(predictionlog.create_log_engine(url))
    prediction_log = PredictionLog(tmp_path / "spool", url)
    prediction_log.start()
    writer = prediction_log._writer
    deadline = time.monotonic() + 60
    while not writer._ready:  # its imports take seconds; the thread writes meanwhile
        assert time.monotonic() < deadline, "the writer process never said it was ready"
        time.sleep(0.1)
    process = writer._process
    assert process.args[-1] == "heart_mlops.predictionlog_writer" and process.poll() is None
    written = spool_rows(prediction_log, 0, 20)
    assert len(log_rows(url, 20)) == 20
    os.kill(process.pid, signal.SIGKILL)  # mid-run: the thread writes by itself, then a new one
    assert process.wait(timeout=10) == -signal.SIGKILL
    for first in (100, 200, 300):
        written += spool_rows(prediction_log, first, 20)
        time.sleep(0.3)
    rows = log_rows(url, 80, timeout=30)
    while not (writer._ready and writer._process is not process):  # a new one
        assert time.monotonic() < deadline + 60, "the writer process was not started again"
        time.sleep(0.1)
    assert prediction_log.close() is True
    ids = [row["request_id"] for row in rows]
    assert sorted(ids) == sorted(written) and len(set(ids)) == 80
    assert writer._process is None  # closed with the log


def test_the_writer_process_imports_no_data_science_libraries():
    """Each API worker starts one: it needs the feature table, not pandas (about 90 MB)."""
    libraries = {"pandas", "pandera", "sklearn", "mlflow"}
    assert heavy_imports("heart_mlops.predictionlog_writer", libraries) == []


def test_records_past_retention_are_deleted_with_their_outcomes(tmp_path):
    engine = predictionlog.create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    predictionlog.migrate(engine)
    now = time.time()
    entry = {"x": [SEED], "p": [0.25], "y": [0], "thr": 0.5, "name": "m", "v": "7"}
    entry |= {"role": "champion", "w": "w", "ms": 1.0}
    entries = [entry | {"ids": ["old"], "t": now - 181 * 86400}, entry | {"ids": ["new"], "t": now}]
    predictionlog.insert_rows(engine, predictionlog.rows_of_entries(entries, "sqlite"))
    for request_id in ("old", "new"):
        predictionlog.record_outcome(engine, request_id, 1, dt.datetime.now(dt.UTC))
    assert predictionlog.delete_expired(engine, 180) == 1
    frame = predictionlog.read_log(engine)
    assert frame["request_id"].tolist() == ["new"] and frame["outcome"].tolist() == [1]
    with engine.connect() as connection:
        outcomes = connection.execute(sa.select(predictionlog.OUTCOMES.c.request_id)).scalars()
        assert list(outcomes) == ["new"]


def test_the_migrations_build_the_schema_the_code_writes(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = predictionlog.create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    predictionlog.migrate(engine)
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection), predictionlog.metadata
        )
    assert [d for d in differences if d[0] != "remove_table"] == []  # (its version table)
