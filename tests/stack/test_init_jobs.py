"""The stack's init pieces run against this machine's services:

- docker/postgres/init-databases.sh against the local PostgreSQL (127.0.0.1:5432, user postgres),
  with database and role names of its own (unique per run), dropped afterwards;
- the bucket job (`heart-mlops create-buckets`, the command of the create-buckets service)
  against `rclone serve s3` configured like the s3 service (keys through RCLONE_AUTH_KEY),
  plus the s3 service's own healthcheck command.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time

import pytest

from heart_mlops import predictionlog
from tests.support import debian_tool, free_port, tool

from .conftest import ROOT, run

INIT_SCRIPT = ROOT / "docker" / "postgres" / "init-databases.sh"
COMPONENTS = ("AIRFLOW", "MLFLOW", "PREDICTION_LOG")
PG = {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres"}


def psql(sql: str, **extra) -> str:
    return psql_in("postgres", sql, **extra)


def psql_in(database: str, sql: str, **extra) -> str:
    result = run(
        [
            debian_tool("psql"),
            "--no-psqlrc",
            "-At",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
        env={**os.environ, **PG, **extra},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def own_databases():
    """Names no one else uses; only what this test created is dropped."""
    try:
        psql("SELECT 1")
    except AssertionError as exc:
        pytest.fail(f"the local PostgreSQL (127.0.0.1:5432, user postgres) is needed: {exc}")
    prefix = f"hm_stack_{secrets.token_hex(4)}"
    names = {
        "AIRFLOW_DB_NAME": f"{prefix}_airflow",
        "AIRFLOW_DB_USER": f"{prefix}_airflow_u",
        "AIRFLOW_DB_PASSWORD": secrets.token_hex(8),
        "MLFLOW_DB_NAME": f"{prefix}_mlflow",
        "MLFLOW_DB_USER": f"{prefix}_mlflow_u",
        "MLFLOW_DB_PASSWORD": secrets.token_hex(8),
        "PREDICTION_LOG_DB_NAME": f"{prefix}_predlog",
        "PREDICTION_LOG_DB_USER": f"{prefix}_predlog_u",
        "PREDICTION_LOG_DB_PASSWORD": secrets.token_hex(8),
        "GRAFANA_DB_USER": f"{prefix}_grafana_u",
        "GRAFANA_DB_PASSWORD": secrets.token_hex(8),
    }
    yield names
    for key in ("AIRFLOW_DB_NAME", "MLFLOW_DB_NAME", "PREDICTION_LOG_DB_NAME"):
        if psql(f"SELECT 1 FROM pg_database WHERE datname = '{names[key]}'"):
            psql(f'DROP DATABASE "{names[key]}"')
    for key in ("AIRFLOW_DB_USER", "MLFLOW_DB_USER", "PREDICTION_LOG_DB_USER", "GRAFANA_DB_USER"):
        if psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{names[key]}'"):
            psql(f'DROP ROLE "{names[key]}"')


def test_postgres_init_script_creates_one_database_per_component(own_databases):
    env = {
        **os.environ,
        **PG,
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        **own_databases,
    }
    for attempt in ("first start", "second run keeps them", "a database added later"):
        if attempt == "a database added later":  # a volume made before the prediction log
            psql(f'DROP DATABASE "{own_databases["PREDICTION_LOG_DB_NAME"]}"')
        result = run(["bash", str(INIT_SCRIPT)], env=env)
        assert result.returncode == 0, f"{attempt}: {result.stderr}"
        for prefix in COMPONENTS:
            owner = psql(
                "SELECT pg_get_userbyid(datdba) FROM pg_database "
                f"WHERE datname = '{own_databases[prefix + '_DB_NAME']}'"
            )
            assert owner == own_databases[f"{prefix}_DB_USER"], attempt
    # each role works in its own database, and only there
    for prefix in COMPONENTS:
        user, db = own_databases[f"{prefix}_DB_USER"], own_databases[f"{prefix}_DB_NAME"]
        result = run(
            [
                debian_tool("psql"),
                "--no-psqlrc",
                "-At",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "CREATE TABLE probe (id int); DROP TABLE probe; SELECT current_user",
            ],
            env={**os.environ, **PG, "PGUSER": user},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[-1] == user
    assert (
        psql(
            "SELECT has_database_privilege("
            f"'{own_databases['MLFLOW_DB_USER']}', "
            f"'{own_databases['AIRFLOW_DB_NAME']}', 'CONNECT')"
        )
        == "f"
    )
    # Grafana's login reaches the prediction log's database and no other
    grafana = own_databases["GRAFANA_DB_USER"]
    for prefix, allowed in (("PREDICTION_LOG", "t"), ("AIRFLOW", "f"), ("MLFLOW", "f")):
        database = own_databases[f"{prefix}_DB_NAME"]
        query = f"SELECT has_database_privilege('{grafana}', '{database}', 'CONNECT')"
        assert psql(query) == allowed, database
    # once the prediction log's schema is migrated by its owner, that login reads the
    # monitoring summaries and not the patient-level log
    owner, password = (own_databases[f"PREDICTION_LOG_DB_{k}"] for k in ("USER", "PASSWORD"))
    database = own_databases["PREDICTION_LOG_DB_NAME"]
    engine = predictionlog.create_log_engine(
        f"postgresql+psycopg2://{owner}:{password}@127.0.0.1:5432/{database}"
    )
    try:
        predictionlog.migrate(engine)
    finally:
        engine.dispose()
    for table, allowed in (("monitoring_window", "t"), ("monitoring_feature", "t")):
        query = f"SELECT has_table_privilege('{grafana}', '{table}', 'SELECT')"
        assert psql_in(database, query) == allowed, table
    query = f"SELECT has_table_privilege('{grafana}', 'prediction_log', 'SELECT')"
    assert psql_in(database, query) == "f"
    # passwords never reach a command line: psql reads them from the environment
    assert "DB_PASSWORD}" not in INIT_SCRIPT.read_text().split("<<'SQL'")[0].split("psql")[-1]


@pytest.fixture
def s3_service(resolved, tmp_path):
    """rclone serve s3 with the s3 service's command and environment, on a loopback port."""
    rclone = tool("rclone")
    service = resolved["services"]["s3"]
    port = free_port()
    command = [rclone, *service["command"]]
    command[command.index("/data")] = str(tmp_path / "data")
    command[command.index(":9000")] = f"127.0.0.1:{port}"
    env = {
        **os.environ,
        **service["environment"],
        "RCLONE_CONFIG": str(tmp_path / "rc.conf"),
        "RCLONE_S3_ENDPOINT": f"http://127.0.0.1:{port}",
    }
    (tmp_path / "data").mkdir()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield {"port": port, "env": env, "root": tmp_path / "data"}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_bucket_job_creates_data_and_mlflow(resolved, s3_service):
    job = resolved["services"]["create-buckets"]
    assert job["command"][:2] == ["heart-mlops", "create-buckets"]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "MLFLOW_", "HEART_MLOPS_"))
    }
    env.update(job["environment"])
    env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{s3_service['port']}"
    command = [sys.executable, "-m", "heart_mlops.cli", *job["command"][1:]]
    first = run(command, env=env, cwd=s3_service["root"])
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created: data, mlflow" in first.stdout
    second = run(command, env=env, cwd=s3_service["root"])
    assert second.returncode == 0 and "created: none" in second.stdout, second.stderr
    assert sorted(p.name for p in s3_service["root"].iterdir()) == ["data", "mlflow"]
    # the s3 service's healthcheck: an authenticated listing of the buckets
    check = resolved["services"]["s3"]["healthcheck"]["test"]
    assert check[0] == "CMD"
    health = run([tool("rclone"), *check[2:]], env=s3_service["env"])
    assert health.returncode == 0 and set(health.stdout.split()) == {"data/", "mlflow/"}, (
        health.stderr
    )


def test_bucket_job_fails_clearly_with_wrong_keys(resolved, s3_service):
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(resolved["services"]["create-buckets"]["environment"])
    env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{s3_service['port']}"
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    result = run(
        [sys.executable, "-m", "heart_mlops.cli", "create-buckets", "--wait", "0"], env=env
    )
    assert result.returncode == 1
    assert "S3 store at" in result.stdout + result.stderr
