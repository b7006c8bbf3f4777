"""`heart-mlops up` without its services: what it checks before starting anything, how it
reports tasks, and that every way it ends stops its children and restores the signal handlers."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from heart_mlops.devstack import StackError
from heart_mlops.devstack import up as stack
from heart_mlops.settings import Settings
from tests.support import free_port


def remote_mlflow_settings(tmp_path) -> Settings:
    """A stack with an MLflow server of its own: only Airflow (and the API) would start."""
    return Settings(
        home=tmp_path / "home",
        airflow_port=free_port(),
        mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
    )


def test_ports_are_those_of_the_servers_it_starts(tmp_path):
    settings = Settings(home=tmp_path, airflow_port=1, mlflow_port=2, api_port=3)
    assert stack._ports(settings, with_api=True, local_mlflow=True) == {
        "HEART_MLOPS_AIRFLOW_PORT": 1,
        "HEART_MLOPS_MLFLOW_PORT": 2,
        "HEART_MLOPS_API_PORT": 3,
    }
    assert stack._ports(settings, with_api=False, local_mlflow=False) == {
        "HEART_MLOPS_AIRFLOW_PORT": 1
    }


def test_a_taken_port_stops_it_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(home=tmp_path / "home", airflow_port=taken.getsockname()[1])
        said = []
        with pytest.raises(StackError, match="HEART_MLOPS_AIRFLOW_PORT"):
            stack.up(settings, with_api=False, say=said.append)
    assert said == [] and not settings.home_dir.exists()  # no store, no Airflow home, no logs


def test_sigterm_while_starting_stops_the_stack(tmp_path, monkeypatch):
    def start_airflow(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("SIGTERM did not interrupt the start")

    monkeypatch.setattr(stack, "_start_airflow", start_airflow)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    said = []

    stack.up(remote_mlflow_settings(tmp_path), with_api=False, say=said.append)

    assert said == ["stopping", "stopped every process of the stack"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_an_error_while_starting_stops_the_children_and_propagates(tmp_path, monkeypatch):
    started = []

    def start_airflow(children, settings, env, timeout, say):
        started.append(children.start("sleeper", ["sleep", "600"], env))
        raise StackError("airflow exited with code 1")

    monkeypatch.setattr(stack, "_start_airflow", start_airflow)
    said = []

    with pytest.raises(StackError, match="airflow exited"):
        stack.up(remote_mlflow_settings(tmp_path), with_api=False, say=said.append)

    assert started[0].process.poll() is not None
    assert said == ["stopped every process of the stack"]


class ParsingClient:
    def __init__(self, loaded: bool, errors: list[str]):
        self.loaded, self.errors = loaded, errors

    def dag_loaded(self, dag_id: str) -> bool:
        self.asked = dag_id
        return self.loaded

    def import_errors(self) -> list[str]:
        return self.errors


def test_dag_ready_once_parsed_and_an_error_when_it_failed_to_import():
    assert stack._dag_ready(ParsingClient(True, ["ignored"])) is True
    client = ParsingClient(True, [])
    assert stack._dag_ready(client, "model_monitoring") is True
    assert client.asked == "model_monitoring"
    assert stack._dag_ready(ParsingClient(False, [])) is False
    with pytest.raises(StackError, match="the DAG failed to import:\ndags/x.py: boom"):
        stack._dag_ready(ParsingClient(False, ["dags/x.py: boom"]))


def test_task_lines():
    ok = {"task_id": "train_model", "state": "success", "duration": 12.34}
    assert stack._task_line(ok) == f"  ok   {'train_model':<30}    12.3s"
    assert stack._task_line({"task_id": "t", "state": "failed"}).startswith("  FAIL t ")
    skipped = {"task_id": "t", "state": "skipped", "duration": None}
    assert stack._task_line(skipped) == f"  skipped {'t':<30}     0.0s"
