"""The few calls of Airflow's public REST API (v2) a stack needs, and following a DAG run.

Shared by the embedded stack, the Celery integration test and the DAG benchmark.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from heart_mlops.devstack import StackError
from heart_mlops.devstack.services import DAG_ID

FINISHED = {"success", "failed"}
TASK_DONE = {"success", "failed", "skipped", "upstream_failed", "removed"}


@dataclass
class AirflowClient:
    """The few calls of Airflow's public REST API (v2) the stack needs."""

    base_url: str
    username: str = "admin"
    password: str = ""
    token: str = field(default="", repr=False)

    def _request(self, method: str, path: str, body: dict | None = None, auth: bool = True):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token or self.login()}"
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            method=method,
            headers=headers,
            data=None if body is None else json.dumps(body).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def login(self) -> str:
        self.token = self._request(
            "POST",
            "/auth/token",
            {"username": self.username, "password": self.password},
            auth=False,
        )["access_token"]
        return self.token

    def healthy(self) -> bool:
        try:
            self._request("GET", "/api/v2/monitor/health", auth=False)
            return True
        except (OSError, urllib.error.URLError):
            return False

    def dag_loaded(self, dag_id: str = DAG_ID) -> bool:
        try:
            self._request("GET", f"/api/v2/dags/{dag_id}")
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise

    def import_errors(self) -> list[str]:
        found = self._request("GET", "/api/v2/importErrors")
        return [f"{e['filename']}: {e['stack_trace']}" for e in found.get("import_errors", [])]

    def unpause(self, dag_id: str = DAG_ID) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, conf: dict | None = None, dag_id: str = DAG_ID) -> str:
        run = self._request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def run_state(self, run_id: str, dag_id: str = DAG_ID) -> str:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict]:
        found = self._request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100"
        )
        return found["task_instances"]

    def variable(self, key: str):
        return json.loads(self._request("GET", f"/api/v2/variables/{key}")["value"])


def follow_run(
    client: AirflowClient,
    run_id: str,
    timeout: float,
    on_task: Callable[[dict], None] | None = None,
    alive: Callable[[], None] | None = None,
    interval: float = 2.0,
) -> str:
    """Wait for a DAG run to end, reporting each task once when it finishes. -> run state"""
    reported: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive:
            alive()
        state = client.run_state(run_id)
        for ti in sorted(client.task_instances(run_id), key=lambda t: t["end_date"] or "~"):
            if ti["state"] in TASK_DONE and ti["task_id"] not in reported:
                reported.add(ti["task_id"])
                if on_task:
                    on_task(ti)
        if state in FINISHED:
            return state
        time.sleep(interval)
    raise StackError(f"DAG run {run_id} did not finish within {timeout:.0f}s")


def admin_password(airflow_home: Path) -> str | None:
    """The password the simple auth manager generated for `admin`, once it has."""
    path = airflow_home / "simple_auth_manager_passwords.json.generated"
    try:
        return json.loads(path.read_text()).get("admin")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
