"""The embedded stack (`heart-mlops up`) and the DAG run once without a scheduler (`pipeline`).

`up` starts, each in a process group of its own: an MLflow server over the local store, Airflow
standalone (SQLite, LocalExecutor, the project's DAGs) and the API when its command exists. It
triggers `mlops_pipeline` once, shows its tasks as they finish and serves until Ctrl-C, which
stops every child. The REST client below is shared with the Celery test and the benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from heart_mlops.errors import HeartMlopsError
from heart_mlops.settings import PROJECT_ROOT, Settings

DAG_ID = "mlops_pipeline"
DAGS_FOLDER = PROJECT_ROOT / "airflow" / "dags"
BIN = Path(sys.executable).parent  # airflow, mlflow, heart-mlops of this environment
MARKER = "HEART_MLOPS_STACK_ID"  # set in every child's environment, to find strays
FINISHED = {"success", "failed"}
TASK_DONE = {"success", "failed", "skipped", "upstream_failed", "removed"}


class StackError(HeartMlopsError):
    """A service of the stack cannot start or answer."""


def mlflow_server_command(
    backend_uri: str, port: int, *artifacts: str, workers: int = 1
) -> list[str]:
    """`mlflow server` on a loopback port; `artifacts`: its artifact options."""
    return [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_uri,
        *artifacts,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def check_ports(ports: dict[str, int], host: str = "127.0.0.1") -> None:
    """Each port free to bind, else an error naming it and the setting that chose it."""
    for setting, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # as the servers do: connections of a stopped server in TIME_WAIT don't block it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                raise StackError(
                    f"port {port} is already in use; stop what listens there or "
                    f"choose another port with {setting}=<port>"
                ) from None


def airflow_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the embedded Airflow: its home inside the project home, the project DAGs."""
    home = settings.home_dir
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "HEART_MLOPS_HOME": str(home),
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{settings.airflow_port}/execution/",
        }
    )
    # LocalExecutor starts this many worker processes: enough for the parallel candidates
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
    return env


def run_dag_once(settings: Settings, conf: dict, log_file: Path | None = None) -> int:
    """`airflow dags test mlops_pipeline` on the SQLite metadata of the local home. -> exit code"""
    env = airflow_env(settings)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else None  # noqa: SIM115 (closed below)
    try:
        migrate = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=env,
            stdout=out or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        if migrate.returncode:
            raise StackError(f"airflow db migrate failed (exit {migrate.returncode})")
        return subprocess.run(
            [str(BIN / "airflow"), "dags", "test", DAG_ID, "--conf", json.dumps(conf)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        ).returncode
    finally:
        if out:
            out.close()


# --- Airflow REST API --------------------------------------------------------------------------


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


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 1.0,
    alive: Callable[[], None] | None = None,
) -> None:
    """Poll until `predicate()` is true; `alive()` may raise when a needed process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive:
            alive()
        if predicate():
            return
        time.sleep(interval)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


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


# --- child processes ---------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise StackError(f"{self.name} exited with code {code}; see {self.log_path}")


class Children:
    """Child processes, each in its own process group; `stop()` ends them all."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.stack_id = secrets.token_hex(8)
        self.children: list[Child] = []

    def start(
        self, name: str, command: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                env={**env, MARKER: self.stack_id},
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def check(self) -> None:
        for child in self.children:
            child.check()

    def stop(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM every group, SIGKILL what remains after `timeout`. -> names of killed ones

        Processes that left their group (task supervisors call setsid) are found beforehand,
        as descendants and by the marker in their environment (orphans too, such as idle
        joblib workers of finished tasks), and get SIGTERM like the groups.
        """
        groups = {child.process.pid for child in self.children}
        tracked = _descendants(groups) | set(self.strays())
        for child in reversed(self.children):
            _signal_group(child.process.pid, signal.SIGTERM)
        for pid in tracked:
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) not in groups:
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = []
        for child in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            while _group_alive(child.process.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _group_alive(child.process.pid):
                killed.append(child.name)
                _signal_group(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=10)
        while tracked & _live_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        strays = sorted((tracked | set(self.strays())) & _live_pids())
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.children.clear()
        return killed + [f"pid {pid}" for pid in strays]

    def strays(self) -> list[int]:
        """Live processes started by this stack (found by the marker in their environment)."""
        needle = f"{MARKER}={self.stack_id}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # /proc/PID/stat: "pid (comm) state ppid ..."; comm may contain spaces
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, ValueError, IndexError):
                continue
    return parents


def _live_pids() -> set[int]:
    return set(_parents())


def _descendants(roots: set[int]) -> set[int]:
    parents = _parents()
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status < 500
    except (OSError, urllib.error.URLError):
        return False


# --- heart-mlops up ----------------------------------------------------------------------------


def up(
    settings: Settings,
    *,
    with_api: bool,
    say: Callable[[str], None] = print,
    conf: dict | None = None,
    startup_timeout: float = 300.0,
    run_timeout: float = 3600.0,
) -> None:
    """Run the embedded stack until Ctrl-C (or SIGTERM); see the module docstring."""
    from heart_mlops import registry

    home = settings.home_dir  # resolved once; every child gets this absolute path
    ports = {"HEART_MLOPS_AIRFLOW_PORT": settings.airflow_port}
    local_mlflow = settings.tracking_uri.startswith("sqlite:")
    if local_mlflow:
        ports["HEART_MLOPS_MLFLOW_PORT"] = settings.mlflow_port
    if with_api:
        ports["HEART_MLOPS_API_PORT"] = settings.api_port
    check_ports(ports)

    env = airflow_env(settings)
    if local_mlflow:
        registry.configure(settings)  # migrate the store, create the experiment (file artifacts)
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{settings.mlflow_port}"
    tracking_url = env.get("MLFLOW_TRACKING_URI", settings.tracking_uri)
    airflow_home = Path(env["AIRFLOW_HOME"])
    airflow_home.mkdir(parents=True, exist_ok=True)
    children = Children(home / "logs")

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM stop the stack, even where SIGINT was ignored (background jobs)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if local_mlflow:
            mlflow = children.start(
                "mlflow",
                mlflow_server_command(
                    settings.tracking_uri,
                    settings.mlflow_port,
                    "--default-artifact-root",
                    settings.mlflow_artifacts_dir.as_uri(),
                ),
                env,
            )
            wait_for(
                lambda: http_ok(f"{tracking_url}/health"),
                startup_timeout,
                f"the MLflow server on port {settings.mlflow_port}",
                alive=mlflow.check,
            )
            say(f"MLflow UI      {tracking_url}")
        airflow = children.start("airflow", [str(BIN / "airflow"), "standalone"], env)
        client = AirflowClient(f"http://127.0.0.1:{settings.airflow_port}")
        wait_for(
            client.healthy,
            startup_timeout,
            f"the Airflow API server on port {settings.airflow_port}",
            alive=airflow.check,
        )
        wait_for(
            lambda: admin_password(airflow_home) is not None,
            60,
            "the Airflow admin password",
            alive=airflow.check,
        )
        client.password = admin_password(airflow_home) or ""
        say(
            f"Airflow UI     {client.base_url}  (user admin, password {client.password}; "
            f"stored in {airflow_home / 'simple_auth_manager_passwords.json.generated'})"
        )
        if with_api:
            api = children.start(
                "api",
                [
                    str(BIN / "heart-mlops"),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(settings.api_port),
                ],
                env,
            )
            say(
                f"API            http://127.0.0.1:{settings.api_port} (started, pid "
                f"{api.process.pid})"
            )
        say(f"logs           {children.log_dir}")

        def dag_ready() -> bool:
            if client.dag_loaded():
                return True
            errors = client.import_errors()
            if errors:
                raise StackError("the DAG failed to import:\n" + "\n".join(errors))
            return False

        wait_for(
            dag_ready,
            startup_timeout,
            f"the DAG {DAG_ID} to be parsed",
            interval=3,
            alive=children.check,
        )
        client.unpause()
        run_id = client.trigger(conf)
        say(f"triggered {DAG_ID} run {run_id}")

        def on_task(ti: dict) -> None:
            mark = {"success": "ok  ", "failed": "FAIL"}.get(ti["state"], ti["state"])
            say(f"  {mark} {ti['task_id']:<30} {ti.get('duration') or 0:7.1f}s")

        state = follow_run(client, run_id, run_timeout, on_task, alive=children.check)
        say(f"{DAG_ID} run {run_id}: {state.upper()}")
        say("serving; press Ctrl-C to stop")
        while True:
            children.check()
            time.sleep(2)
    except KeyboardInterrupt:
        say("stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        killed = children.stop()
        if killed:
            say(f"had to kill: {', '.join(killed)}")
        say("stopped every process of the stack")
