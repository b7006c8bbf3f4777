"""The Airflow REST client against a stub server, following a run, the admin password."""

from __future__ import annotations

import json
import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from heart_mlops.devstack import StackError
from heart_mlops.devstack.airflow_client import (
    PASSWORD_FILE,
    AirflowClient,
    admin_password,
    follow_run,
)
from heart_mlops.graph import DAG_ID
from tests.support import free_port


@pytest.fixture
def api():
    """A stub API server: `routes` (method, path) -> (status, JSON body); `seen` the requests."""
    routes: dict[tuple[str, str], tuple[int, object]] = {}
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "body": body,
                    "auth": self.headers.get("Authorization"),
                }
            )
            status, answer = routes.get((self.command, self.path), (404, {"detail": "no"}))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _answer

        def log_message(self, *args):
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield {
            "url": f"http://127.0.0.1:{server.server_address[1]}",
            "routes": routes,
            "seen": seen,
        }
        server.shutdown()


def test_the_client_logs_in_once_and_sends_its_token(api):
    api["routes"][("POST", "/auth/token")] = (201, {"access_token": "t0k"})
    api["routes"][("POST", f"/api/v2/dags/{DAG_ID}/dagRuns")] = (200, {"dag_run_id": "run-1"})
    api["routes"][("PATCH", f"/api/v2/dags/{DAG_ID}")] = (200, {"is_paused": False})
    client = AirflowClient(api["url"], password="secret")

    client.unpause()
    assert client.trigger({"tuning_trials": 2}) == "run-1"

    login, unpause, trigger = api["seen"]
    assert login["body"] == {"username": "admin", "password": "secret"} and not login["auth"]
    assert unpause["body"] == {"is_paused": False} and unpause["auth"] == "Bearer t0k"
    assert trigger["body"] == {"logical_date": None, "conf": {"tuning_trials": 2}}
    assert trigger["auth"] == "Bearer t0k"


def test_dag_loaded_is_false_on_404_and_raises_on_other_errors(api):
    client = AirflowClient(api["url"], token="t0k")
    assert client.dag_loaded() is False
    api["routes"][("GET", f"/api/v2/dags/{DAG_ID}")] = (500, {"detail": "boom"})
    with pytest.raises(urllib.error.HTTPError):
        client.dag_loaded()
    api["routes"][("GET", f"/api/v2/dags/{DAG_ID}")] = (200, {"dag_id": DAG_ID})
    assert client.dag_loaded() is True


def test_healthy_and_import_errors(api):
    client = AirflowClient(api["url"], token="t0k")
    assert not client.healthy()
    api["routes"][("GET", "/api/v2/monitor/health")] = (200, {})
    api["routes"][("GET", "/api/v2/importErrors")] = (
        200,
        {"import_errors": [{"filename": "dag.py", "stack_trace": "SyntaxError"}]},
    )
    assert client.healthy()
    assert client.import_errors() == ["dag.py: SyntaxError"]
    assert not AirflowClient(f"http://127.0.0.1:{free_port()}").healthy()  # nothing listens


class FakeClient:
    """Run states in turn, and the task instances seen at each poll."""

    def __init__(self, states: list[str], polls: list[list[dict]]):
        self.states, self.polls = iter(states), iter(polls)
        self.dags: set[str] = set()  # the DAG ids asked about

    def run_state(self, run_id: str, dag_id: str) -> str:
        self.dags.add(dag_id)
        return next(self.states)

    def task_instances(self, run_id: str, dag_id: str) -> list[dict]:
        self.dags.add(dag_id)
        return next(self.polls)


def _ti(task_id: str, state: str | None, end: str | None = None) -> dict:
    return {"task_id": task_id, "state": state, "end_date": end}


def test_follow_run_reports_each_finished_task_once_in_order_of_end():
    first = [
        _ti("b", "success", "2025-01-01T00:02"),
        _ti("a", "success", "2025-01-01T00:01"),
        _ti("c", "running"),
    ]
    second = [*first[:2], _ti("c", "failed", "2025-01-01T00:03"), _ti("d", "upstream_failed")]
    client = FakeClient(["running", "failed"], [first, second])
    reported = []

    state = follow_run(client, "run-1", 60, reported.append, interval=0)

    assert state == "failed"
    assert [ti["task_id"] for ti in reported] == ["a", "b", "c", "d"]
    assert client.dags == {"mlops_pipeline"}


def test_follow_run_follows_the_dag_it_is_given():
    client = FakeClient(["success"], [[_ti("monitor", "success", "2025-01-01T00:01")]])
    assert follow_run(client, "run-1", 60, interval=0, dag_id="model_monitoring") == "success"
    assert client.dags == {"model_monitoring"}


def test_follow_run_gives_up_after_the_timeout():
    client = FakeClient(["running"] * 1000, [[]] * 1000)
    with pytest.raises(StackError, match="DAG run run-1 did not finish within 0s"):
        follow_run(client, "run-1", 0.1, interval=0.01)


def test_follow_run_stops_when_a_needed_process_died():
    def dead():
        raise StackError("worker exited with code 1")

    with pytest.raises(StackError, match="worker exited"):
        follow_run(FakeClient([], []), "run-1", 60, alive=dead)


def test_admin_password_once_the_file_is_complete(tmp_path):
    assert admin_password(tmp_path) is None
    (tmp_path / PASSWORD_FILE).write_text('{"admin": "pa')  # still being written
    assert admin_password(tmp_path) is None
    (tmp_path / PASSWORD_FILE).write_text('{"admin": "pass"}')
    assert admin_password(tmp_path) == "pass"
