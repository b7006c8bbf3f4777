"""The Airflow environment of the local home, the DAG run once (with a stand-in `airflow`),
the `mlflow server` command."""

from __future__ import annotations

import json
import os
import stat

import pytest

from heart_mlops.devstack import StackError, services
from heart_mlops.graph import DAG_ID
from heart_mlops.settings import Settings

# records its arguments, then exits with the code given for its first argument
FAKE_AIRFLOW = """#!/bin/sh
echo "$@" >> "$HEART_MLOPS_HOME/calls"
echo "airflow $1 output"
case "$1" in db) exit {migrate} ;; *) exit {test} ;; esac
"""


def test_airflow_env_puts_airflow_in_the_home_and_keeps_the_rest(tmp_path):
    settings = Settings(home=tmp_path / "home", airflow_port=8181)
    env = services.airflow_env(settings, {"PATH": "/bin", "OTHER": "kept"})

    assert env["OTHER"] == "kept"
    assert env["PATH"] == f"{services.BIN}{os.pathsep}/bin"
    assert env["HEART_MLOPS_HOME"] == str(settings.home_dir)
    assert env["AIRFLOW_HOME"] == str(settings.home_dir / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(services.DAGS_FOLDER)
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8181/execution/"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    base = {"AIRFLOW__CORE__PARALLELISM": "2"}
    assert services.airflow_env(settings, base)["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert not settings.home_dir.exists()


def test_mlflow_server_command_listens_on_loopback_only():
    command = services.mlflow_server_command("sqlite:///m.db", 5001, "--serve-artifacts", workers=2)
    assert command[0] == str(services.BIN / "mlflow")
    assert command[1:] == [
        "server",
        "--backend-store-uri",
        "sqlite:///m.db",
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        "5001",
        "--workers",
        "2",
    ]


def _fake_airflow(tmp_path, monkeypatch, migrate: int, test: int) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    airflow = bin_dir / "airflow"
    airflow.write_text(FAKE_AIRFLOW.format(migrate=migrate, test=test))
    airflow.chmod(airflow.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(services, "BIN", bin_dir)


def test_run_dag_once_migrates_then_tests_the_dag_with_its_conf(tmp_path, monkeypatch):
    _fake_airflow(tmp_path, monkeypatch, migrate=0, test=7)
    settings = Settings(home=tmp_path / "home")
    log = tmp_path / "run.log"

    assert services.run_dag_once(settings, {"tuning_trials": 2}, log_file=log) == 7

    calls = (settings.home_dir / "calls").read_text().splitlines()
    assert calls == [
        "db migrate",
        f"dags test {DAG_ID} --conf " + json.dumps({"tuning_trials": 2}),
    ]
    assert log.read_text() == "airflow db output\nairflow dags output\n"
    assert (settings.home_dir / "airflow").is_dir()


def test_run_dag_once_stops_when_the_migration_fails(tmp_path, monkeypatch):
    _fake_airflow(tmp_path, monkeypatch, migrate=3, test=0)
    settings = Settings(home=tmp_path / "home")

    with pytest.raises(StackError, match=r"airflow db migrate failed \(exit 3\)"):
        services.run_dag_once(settings, {})

    assert (settings.home_dir / "calls").read_text() == "db migrate\n"
