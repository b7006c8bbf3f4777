"""The few calls of Airflow's public REST API (v2) a stack needs, and following a DAG run.

Shared by the embedded stack, the Celery integration test and the DAG benchmark. HTTP errors
come as `urllib.error.HTTPError`, an unreachable server as `urllib.error.URLError` (an OSError).
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
from heart_mlops.graph import DAG_ID

FINISHED = {"success", "failed"}
TASK_DONE = {"success", "failed", "skipped", "upstream_failed", "removed"}
# where the simple auth manager keeps the passwords it generated, in AIRFLOW_HOME
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"


@dataclass
class AirflowClient:
    """An Airflow API server at `base_url`; logs in on the first authenticated call."""

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
        """Returns a fresh access token, also kept for later calls. Raises HTTPError (401)
        for a wrong password, URLError when the server cannot be reached (30 s timeout)."""
        self.token = self._request(
            "POST",
            "/auth/token",
            {"username": self.username, "password": self.password},
            auth=False,
        )["access_token"]
        return self.token

    def healthy(self) -> bool:
        """True when the health endpoint answers with a success status, False for an error
        status or no answer within 30 seconds."""
        try:
            self._request("GET", "/api/v2/monitor/health", auth=False)
            return True
        except (OSError, urllib.error.URLError):
            return False

    def dag_loaded(self, dag_id: str = DAG_ID) -> bool:
        """True when the DAG is parsed, False while the API answers 404; raises HTTPError
        for any other error status and URLError when the server cannot be reached."""
        try:
            self._request("GET", f"/api/v2/dags/{dag_id}")
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise

    def import_errors(self) -> list[str]:
        """Returns "file: traceback" of each DAG file that failed to import; raises HTTPError
        or URLError."""
        found = self._request("GET", "/api/v2/importErrors")
        return [f"{e['filename']}: {e['stack_trace']}" for e in found.get("import_errors", [])]

    def unpause(self, dag_id: str = DAG_ID) -> None:
        """Unpauses the DAG. Returns None; raises HTTPError (404: no such DAG) or URLError."""
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, conf: dict | None = None, dag_id: str = DAG_ID) -> str:
        """Triggers a run with params `conf`. Returns its run id; raises HTTPError or URLError."""
        run = self._request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def run_state(self, run_id: str, dag_id: str = DAG_ID) -> str:
        """Returns the run's state ("queued", "running", "success", "failed"); raises HTTPError
        or URLError."""
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict]:
        """Returns the run's task instances as the API gives them (at most 100); raises
        HTTPError or URLError."""
        found = self._request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100"
        )
        return found["task_instances"]

    def task_tries(self, run_id: str, task_id: str, dag_id: str = DAG_ID) -> list[dict]:
        """Returns every try of one task of the run (try_number, state, hostname, ...) as the
        API gives them; raises HTTPError or URLError."""
        found = self._request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
        )
        return found["task_instances"]

    def variable(self, key: str):
        """Returns the JSON-decoded value of an Airflow Variable; raises HTTPError (404: not
        set) or URLError, and json.JSONDecodeError when the value is not JSON."""
        return json.loads(self._request("GET", f"/api/v2/variables/{key}")["value"])


def follow_run(
    client: AirflowClient,
    run_id: str,
    timeout: float,
    on_task: Callable[[dict], None] | None = None,
    alive: Callable[[], None] | None = None,
    interval: float = 2.0,
    dag_id: str = DAG_ID,
) -> str:
    """Wait for a run of DAG `dag_id` to end, polling every `interval` seconds, passing each
    task instance to `on_task` once when it finishes (in order of end date).

    Returns the run's final state ("success" or "failed"). Raises StackError when `timeout`
    seconds pass first; `alive()`, called before each poll, may raise (StackError when a needed
    process died); the client's calls raise HTTPError or URLError.
    """
    reported: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive:
            alive()
        state = client.run_state(run_id, dag_id)
        for ti in sorted(client.task_instances(run_id, dag_id), key=lambda t: t["end_date"] or "~"):
            if ti["state"] in TASK_DONE and ti["task_id"] not in reported:
                reported.add(ti["task_id"])
                if on_task:
                    on_task(ti)
        if state in FINISHED:
            return state
        time.sleep(interval)
    raise StackError(f"DAG run {run_id} did not finish within {timeout:.0f}s")


def admin_password(airflow_home: Path) -> str | None:
    """Returns the password the simple auth manager generated for `admin` in `airflow_home`,
    None until it has (file missing or not yet valid JSON). Raises OSError for other read
    errors."""
    path = airflow_home / PASSWORD_FILE
    try:
        return json.loads(path.read_text()).get("admin")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
