"""The DAG under CeleryExecutor with real services, as the Docker Compose stack runs it.

Airflow metadata and the Celery result backend in a PostgreSQL database of the test's own, the
broker on Redis, an MLflow server on PostgreSQL with its artifacts in a real S3 server
(`rclone serve s3`), the artifact store on the same S3 server. The stack's settings are those of
deploy/stack.env.template rendered with 127.0.0.1; only ports, homes, the DAGs folder and a
Celery queue of the test's own are added. The worker runs in another directory with its own
AIRFLOW_HOME and TMPDIR, so tasks can only exchange data through S3, MLflow and XCom.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from heart_mlops import storage
from heart_mlops.devstack import stack_env
from heart_mlops.devstack.airflow_client import AirflowClient, admin_password, follow_run
from heart_mlops.devstack.processes import Children, http_ok, wait_for
from heart_mlops.devstack.services import BIN, DAGS_FOLDER, mlflow_server_command
from heart_mlops.graph import DAG_ID, MONITOR_DAG_ID, retrain_asset
from heart_mlops.settings import PROJECT_ROOT
from tests.conftest import FAST_PROFILE
from tests.support import free_port, rclone_s3_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS = ("127.0.0.1", 6379)
STARTUP_TIMEOUT = 240
RUN_TIMEOUT = 900
FAST_ENV = {f"HEART_MLOPS_{key.upper()}": str(value) for key, value in FAST_PROFILE.items()}
MONITOR_SETTINGS = {"drift_min_rows": 50, "live_min_outcomes": 30}
VARIABLES = (
    "best_model_type",
    "best_model_tuning_label",
    "best_model_tuned_params",
    "best_model_tuned_accuracy",
    "best_model_cv_roc_auc",
    "best_model_version",
)


def reachable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(3)
        return sock.connect_ex((host, port)) == 0


def postgres(sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(dbname="postgres", **PG)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory):
    for name, (host, port) in {"PostgreSQL": (PG["host"], PG["port"]), "Redis": REDIS}.items():
        if not reachable(host, port):
            pytest.fail(f"{name} is not reachable at {host}:{port}; the Celery test needs it")
    root = tmp_path_factory.mktemp("celery-stack")
    suffix = secrets.token_hex(4)
    airflow_db, mlflow_db = f"heart_test_airflow_{suffix}", f"heart_test_mlflow_{suffix}"
    log_db = f"heart_test_predlog_{suffix}"
    log_url = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{log_db}"
    ports = {
        "api": free_port(),
        "logs": free_port(),
        "mlflow": free_port(),
        "s3": free_port(),
    }
    password = secrets.token_hex(16)
    rendered = stack_env.render(
        {
            "AIRFLOW_API_HOST": "127.0.0.1",
            "AIRFLOW_API_PORT": ports["api"],
            "AIRFLOW_JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW_SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW_DB_USER": PG["user"],
            "AIRFLOW_DB_PASSWORD": password,
            "POSTGRES_HOST": PG["host"],
            "POSTGRES_PORT": PG["port"],
            "AIRFLOW_DB_NAME": airflow_db,
            "BROKER_HOST": REDIS[0],
            "BROKER_PORT": REDIS[1],
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": ports["mlflow"],
            "S3_HOST": "127.0.0.1",
            "S3_PORT": ports["s3"],
            "S3_ACCESS_KEY": secrets.token_hex(8),
            "S3_SECRET_KEY": secrets.token_hex(20),
        }
    )
    queue = f"heart_test_{suffix}"  # the broker's db is shared: tasks go to a queue of our own
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HEART_MLOPS_", "AIRFLOW", "MLFLOW_", "AWS_"))
    }
    common = {
        **base,
        **rendered,
        **FAST_ENV,
        "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(ports["api"]),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["logs"]),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        # parse the DAGs folder every few seconds, not every few minutes
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        # the test triggers its own runs; a tick falling inside one would start a second one
        "HEART_MLOPS_DAG_SCHEDULE": "none",
        "HEART_MLOPS_MONITOR_SCHEDULE": "none",
        # the prediction log the replayed API writes; streams of 61 rows are enough to drift
        "HEART_MLOPS_PREDICTION_LOG_URI": log_url,
        "HEART_MLOPS_DRIFT_MIN_ROWS": str(MONITOR_SETTINGS["drift_min_rows"]),
        "HEART_MLOPS_LIVE_MIN_OUTCOMES": str(MONITOR_SETTINGS["live_min_outcomes"]),
    }
    dirs = {name: root / name for name in ("server", "worker", "worker-tmp", "s3", "mlflow")}
    for path in dirs.values():
        path.mkdir()
    server_env = {
        **common,
        "AIRFLOW_HOME": str(dirs["server"]),
        "HEART_MLOPS_HOME": str(dirs["server"] / "home"),
    }
    worker_env = {
        **common,
        "AIRFLOW_HOME": str(dirs["worker"]),
        "TMPDIR": str(dirs["worker-tmp"]),
        "HEART_MLOPS_HOME": str(dirs["worker"] / "home"),
    }
    children = Children(root / "logs")
    created_dbs: list[str] = []
    patch = pytest.MonkeyPatch()
    try:
        for db in (airflow_db, mlflow_db, log_db):
            postgres(f'CREATE DATABASE "{db}"')
            created_dbs.append(db)
        s3 = children.start(
            "s3",
            rclone_s3_command(
                dirs["s3"],
                ports["s3"],
                rendered["AWS_ACCESS_KEY_ID"],
                rendered["AWS_SECRET_ACCESS_KEY"],
            ),
            common,
        )
        wait_for(lambda: reachable("127.0.0.1", ports["s3"]), 60, "rclone S3", alive=s3.check)
        # this process reads the S3 store too, with the stack's endpoint and keys
        for key in (
            "AWS_ENDPOINT_URL_S3",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        ):
            patch.setenv(key, rendered[key])
        storage.ensure_buckets()  # what the stack's one-shot bucket job does
        source = storage.write_bytes(
            "s3://data/source/heart.csv", (PROJECT_ROOT / "data" / "heart.csv").read_bytes()
        )
        mlflow = children.start(
            "mlflow",
            mlflow_server_command(
                f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{mlflow_db}",
                ports["mlflow"],
                "--serve-artifacts",
                "--artifacts-destination",
                "s3://mlflow",
                workers=2,
            ),
            common,
            cwd=dirs["mlflow"],
        )
        subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=server_env,
            check=True,
            capture_output=True,
            timeout=600,
        )
        for name in ("api-server", "scheduler", "dag-processor"):
            children.start(name, [str(BIN / "airflow"), name], server_env, cwd=dirs["server"])
        children.start(
            "worker",
            [
                str(BIN / "airflow"),
                "celery",
                "worker",
                "--queues",
                queue,
                "--concurrency",
                rendered["AIRFLOW__CELERY__WORKER_CONCURRENCY"],
                "--celery-hostname",
                f"{queue}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            worker_env,
            cwd=dirs["worker"],
        )
        wait_for(
            lambda: http_ok(f"{rendered['MLFLOW_TRACKING_URI']}/health"),
            STARTUP_TIMEOUT,
            "the MLflow server",
            alive=mlflow.check,
        )
        client = AirflowClient(f"http://127.0.0.1:{ports['api']}")
        wait_for(client.healthy, STARTUP_TIMEOUT, "the Airflow API server", alive=children.check)
        wait_for(
            lambda: admin_password(dirs["server"]) is not None,
            60,
            "the admin password",
            alive=children.check,
        )
        client.password = admin_password(dirs["server"]) or ""
        for dag_id in (DAG_ID, MONITOR_DAG_ID):
            wait_for(
                lambda dag_id=dag_id: client.dag_loaded(dag_id),
                STARTUP_TIMEOUT,
                f"the DAG {dag_id} to be parsed",
                interval=3,
                alive=children.check,
            )
        yield {
            "client": client,
            "rendered": rendered,
            "queue": queue,
            "source": source,
            "children": children,
            "log_url": log_url,
            "root": root,
        }
    finally:
        patch.undo()
        children.stop()
        for db in created_dbs:
            postgres(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        _delete_queue_keys(queue)


def _delete_queue_keys(queue: str) -> None:
    import redis

    connection = redis.Redis(*REDIS, db=0)
    for key in connection.scan_iter(f"*{queue}*"):
        connection.delete(key)


@pytest.fixture(scope="module")
def finished_run(celery_stack):
    client = celery_stack["client"]
    client.unpause()
    run_id = client.trigger({"data_uri": celery_stack["source"], "tuning_trials": 2})
    state = follow_run(client, run_id, RUN_TIMEOUT, alive=celery_stack["children"].check)
    tis = client.task_instances(run_id)
    run = client._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
    _report_timings(run, tis)
    return {"run_id": run_id, "state": state, "task_instances": tis, **celery_stack}


def _report_timings(run: dict, tis: list[dict]) -> None:
    """Wall time and each task's share, printed, and written where HEART_MLOPS_BENCH_JSON says."""

    def seconds(start, end):
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()

    wall = seconds(run["start_date"], run["end_date"])
    tasks = {
        ti["task_id"]: seconds(ti["start_date"], ti["end_date"])
        for ti in tis
        if ti["start_date"] and ti["end_date"]
    }
    print(f"\nCeleryExecutor: DAG run wall time {wall:.1f}s")
    for task_id, took in sorted(tasks.items(), key=lambda kv: -kv[1]):
        print(f"  {task_id:<30} {took:7.1f}s {100 * took / wall:5.1f}%")
    if target := os.environ.get("HEART_MLOPS_BENCH_JSON"):
        Path(target).write_text(
            json.dumps({"mode": "celery", "wall_seconds": wall, "tasks": tasks}, indent=2)
        )


def test_every_task_succeeds_on_the_celery_worker(finished_run):
    tis = finished_run["task_instances"]
    assert finished_run["state"] == "success", [(t["task_id"], t["state"]) for t in tis]
    assert len(tis) == 11
    assert {t["state"] for t in tis} == {"success"}
    # every task went through the broker to the worker's queue
    assert {t["queue"] for t in tis} == {finished_run["queue"]}


def test_variables_are_set(finished_run):
    client = finished_run["client"]
    values = {key: client.variable(key) for key in VARIABLES}
    assert values["best_model_type"] in ("random_forest", "logistic_regression", "svm")
    assert values["best_model_tuning_label"] in ("tuned", "untuned")
    assert values["best_model_version"]["champion"] is True
    assert 0.5 < values["best_model_tuned_accuracy"] <= 1
    assert 0.5 < values["best_model_cv_roc_auc"] <= 1


def _mlflow(finished_run):
    """A client of the stack's MLflow server."""
    from mlflow import MlflowClient

    uri = finished_run["rendered"]["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_champion_registered_in_the_mlflow_server(finished_run):
    client = _mlflow(finished_run)
    champion = client.get_model_version_by_alias("heart_disease_classifier", "champion")
    assert champion.tags["heart_mlops.pipeline_run"] == finished_run["run_id"]
    version = finished_run["client"].variable("best_model_version")["version"]
    assert str(champion.version) == str(version)
    # the server proxied its artifacts into the S3 bucket `mlflow`
    pages = storage.s3_client().get_paginator("list_objects_v2").paginate(Bucket="mlflow")
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    assert any(key.endswith("/MLmodel") for key in keys)


def test_the_run_objects_are_in_the_s3_bucket(finished_run):
    prefix = storage.join(finished_run["rendered"]["HEART_MLOPS_ARTIFACT_STORE_URI"], "runs")
    keys = storage.list_keys(prefix)
    assert keys and all(key.startswith("s3://data/pipeline/runs/manual__") for key in keys)
    names = {key.split("/runs/", 1)[1].split("/", 1)[1] for key in keys}
    assert {
        "raw/data.csv",
        "validated.parquet",
        "train.parquet",
        "holdout.parquet",
        "models/final.skops",
        "reports/registration.json",
    } <= names


def test_invalid_data_fails_at_preprocess_without_retries_and_keeps_the_champion(finished_run):
    """Runs after the tests above: a second run, on a file with impossible ages."""
    import pandas as pd

    client, mlflow = finished_run["client"], _mlflow(finished_run)
    name = "heart_disease_classifier"
    champion = mlflow.get_model_version_by_alias(name, "champion").version
    versions = len(mlflow.search_model_versions(f"name = '{name}'"))
    variables = {key: client.variable(key) for key in VARIABLES}
    frame = pd.read_csv(PROJECT_ROOT / "data" / "heart.csv")
    frame.loc[:4, "age"] = 500
    bad = storage.write_bytes("s3://data/source/bad.csv", frame.to_csv(index=False).encode())

    run_id = client.trigger({"data_uri": bad, "tuning_trials": 2})
    state = follow_run(client, run_id, RUN_TIMEOUT, alive=finished_run["children"].check)

    tis = {ti["task_id"]: ti for ti in client.task_instances(run_id)}
    assert state == "failed"
    assert tis["extract_data"]["state"] == "success"
    assert (tis["preprocess_data"]["state"], tis["preprocess_data"]["try_number"]) == ("failed", 1)
    downstream = set(tis) - {"extract_data", "preprocess_data"}
    assert {tis[task]["state"] for task in downstream} == {"upstream_failed"}
    log = client._request(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/preprocess_data/logs/1"
    )
    text = json.dumps(log)  # the validation report, from the worker's log server
    assert "column 'age': rows 1, 2, 3, 4, 5 hold 500" in text and "allowed: 1 to 120" in text
    assert mlflow.get_model_version_by_alias(name, "champion").version == champion
    assert len(mlflow.search_model_versions(f"name = '{name}'")) == versions
    assert {key: client.variable(key) for key in VARIABLES} == variables


# --- model_monitoring: streams replayed through the API, drift asks mlops_pipeline to run ----


@pytest.fixture(scope="module")
def replayed(finished_run):
    """The holdout-like stream, then the shifted one, sent through the API (served in this
    process on the stack's MLflow champion, logging to the stack's PostgreSQL prediction log),
    outcomes fed back. -> {"holdout": (start, end), "shifted": (start, end)}: the windows."""
    from pydantic import SecretStr

    from heart_mlops import predictionlog
    from heart_mlops.settings import Settings
    from tests.api.conftest import serving
    from tests.monitoring_streams import HOLDOUT_ROWS, holdout_stream, shifted_stream
    from tests.test_monitoring import TOKEN, _replay, _wait_for_log

    rendered = finished_run["rendered"]
    settings = Settings(
        home=finished_run["root"] / "api",
        mlflow_tracking_uri=rendered["MLFLOW_TRACKING_URI"],
        artifact_store_uri=rendered["HEART_MLOPS_ARTIFACT_STORE_URI"],
        prediction_log_uri=finished_run["log_url"],
        api_token=SecretStr(TOKEN),
        **FAST_PROFILE,
        **MONITOR_SETTINGS,
    )
    # the schema first, as `heart-mlops serve` migrates before its workers start
    predictionlog.migrate(predictionlog.create_log_engine(settings.prediction_log_url))
    windows = {}
    with serving(settings) as url:
        for name, stream in (("holdout", holdout_stream()), ("shifted", shifted_stream())):
            start = datetime.now(UTC)
            _replay(url, stream)
            windows[name] = (start, datetime.now(UTC) + timedelta(milliseconds=1))
        _wait_for_log(finished_run["log_url"], 2 * HOLDOUT_ROWS)
    return windows


def _monitor(finished_run, window) -> dict:
    """A model_monitoring run over `window` on the Celery worker, followed to its end.
    -> {"run_id", "state", "tasks": task id -> state, "monitored": the monitor task's XCom}"""
    client = finished_run["client"]
    client.unpause(MONITOR_DAG_ID)  # triggered only: its schedule is none here
    since, until = (moment.isoformat() for moment in window)
    run_id = client.trigger({"since": since, "until": until}, dag_id=MONITOR_DAG_ID)
    state = follow_run(
        client, run_id, RUN_TIMEOUT, alive=finished_run["children"].check, dag_id=MONITOR_DAG_ID
    )
    tasks = {ti["task_id"]: ti["state"] for ti in client.task_instances(run_id, MONITOR_DAG_ID)}
    path = f"/api/v2/dags/{MONITOR_DAG_ID}/dagRuns/{run_id}/taskInstances/monitor"
    xcom = client._request("GET", f"{path}/xcomEntries/return_value?deserialize=true")
    return {"run_id": run_id, "state": state, "tasks": tasks, "monitored": xcom["value"]}


def _retrain_requests(client) -> list[dict]:
    found = client._request("GET", f"/api/v2/assets/events?source_dag_id={MONITOR_DAG_ID}")
    return found["asset_events"]


def _asset_triggered_runs(client) -> list[dict]:
    found = client._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=asset_triggered")
    return found["dag_runs"]


def test_holdout_rows_drift_nothing_and_trigger_nothing(finished_run, replayed):
    run = _monitor(finished_run, replayed["holdout"])
    monitored = run["monitored"]
    assert run["state"] == "success", run["tasks"]
    assert run["tasks"] == {
        "monitor": "success",
        "expire_predictions": "success",
        "request_retrain": "skipped",
    }
    assert monitored["rows"] == 61 and monitored["dataset_drift"] is False
    assert monitored["triggered"] is False, monitored["trigger_reason"]
    client = finished_run["client"]
    assert _retrain_requests(client) == []
    assert _asset_triggered_runs(client) == []


def test_shifted_rows_drift_and_start_the_pipeline_whose_gate_decides(finished_run, replayed):
    """After the holdout test: the shifted stream drifts, the request starts mlops_pipeline."""
    client, mlflow = finished_run["client"], _mlflow(finished_run)
    name = "heart_disease_classifier"
    champion_before = mlflow.get_model_version_by_alias(name, "champion").version

    run = _monitor(finished_run, replayed["shifted"])
    monitored = run["monitored"]
    assert run["state"] == "success" and set(run["tasks"].values()) == {"success"}, run
    assert monitored["dataset_drift"] is True and monitored["triggered"] is True
    # changed on purpose: age, cp, thal (values); chol, ca, trestbps (missing pattern)
    assert {"age", "cp", "thal", "chol", "ca", "trestbps"} <= set(monitored["drifted_features"])
    (event,) = _retrain_requests(client)
    assert event["uri"] == retrain_asset().uri and event["source_run_id"] == run["run_id"]
    assert event["extra"]["reason"] == monitored["trigger_reason"]
    assert event["extra"]["report_uri"] == monitored["report_uri"]
    assert storage.read_bytes(monitored["report_uri"]).lstrip().startswith(b"<!DOCTYPE html>")

    # the scheduler starts mlops_pipeline on the request
    wait_for(lambda: _asset_triggered_runs(client), 120, "an asset-triggered mlops_pipeline run")
    (pipeline_run,) = _asset_triggered_runs(client)
    state = follow_run(
        client, pipeline_run["dag_run_id"], RUN_TIMEOUT, alive=finished_run["children"].check
    )
    assert state == "success"
    runs = mlflow.search_runs(
        [mlflow.get_experiment_by_name("heart-disease").experiment_id],
        f"tags.`heart_mlops.pipeline_run` = '{pipeline_run['dag_run_id']}' "
        "and tags.`heart_mlops.step` = 'pipeline'",
    )
    (parent,) = runs
    assert parent.data.tags["heart_mlops.triggered_by"] == "asset_triggered"
    assert parent.data.tags["heart_mlops.trigger_reason"] == monitored["trigger_reason"]
    assert parent.data.tags["heart_mlops.trigger_report_uri"] == monitored["report_uri"]
    # the champion moved only if register_model's gate said so
    decided = client.variable("best_model_version")
    champion_after = mlflow.get_model_version_by_alias(name, "champion").version
    expected = decided["version"] if decided["champion"] else champion_before
    assert str(champion_after) == str(expected)
