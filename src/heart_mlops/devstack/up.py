"""The embedded stack behind `heart-mlops up` (`make run`).

`up` starts, each in a process group of its own: an MLflow server over the local store, Airflow
standalone (SQLite, LocalExecutor, the project's DAGs) and the API when its command exists. It
triggers `mlops_pipeline` once, shows its tasks as they finish and serves until Ctrl-C, which
stops every child. `model_monitoring` is unpaused too: it watches the local prediction log on
its schedule and asks `mlops_pipeline` for a retrain when the data drifts.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from heart_mlops import registry
from heart_mlops.devstack import StackError
from heart_mlops.devstack.airflow_client import (
    PASSWORD_FILE,
    AirflowClient,
    admin_password,
    follow_run,
)
from heart_mlops.devstack.processes import Children, check_ports, http_ok, wait_for
from heart_mlops.devstack.services import BIN, airflow_env, mlflow_server_command
from heart_mlops.graph import DAG_ID, MONITOR_DAG_ID
from heart_mlops.settings import Settings

Say = Callable[[str], None]


def up(
    settings: Settings,
    *,
    with_api: bool,
    say: Say = print,
    conf: dict | None = None,
    startup_timeout: float = 300.0,
    run_timeout: float = 3600.0,
) -> None:
    """Run the embedded stack until Ctrl-C (or SIGTERM); see the module docstring.

    Returns None once every child is stopped, which happens whatever ends the stack. Raises
    StackError, before anything starts, when a port is in use; later when a service exits or
    does not answer within `startup_timeout` seconds (60 s for the admin password), the DAG
    fails to import, or its run (params `conf`) does not finish within `run_timeout` seconds.
    Errors of the local MLflow store's set-up and of the Airflow API (urllib.error.HTTPError,
    URLError) propagate as they are.
    """
    local_mlflow = settings.tracking_uri.startswith("sqlite:")
    check_ports(_ports(settings, with_api=with_api, local_mlflow=local_mlflow))
    env = _environment(settings, local_mlflow=local_mlflow)
    children = Children(settings.home_dir / "logs")
    # Ctrl-C and SIGTERM stop the stack, even where SIGINT was ignored (background jobs)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if local_mlflow:
            _start_mlflow(children, settings, env, startup_timeout, say)
        client = _start_airflow(children, settings, env, startup_timeout, say)
        if with_api:
            _start_api(children, settings, env, say)
        say(f"logs           {children.log_dir}")
        _run_dag(client, children, conf, say, startup_timeout, run_timeout)
        if with_api:
            _wait_for_champion(children, settings, say)
        _serve(children, say)
    except KeyboardInterrupt:
        say("stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        killed = children.stop()
        if killed:
            say(f"had to kill: {', '.join(killed)}")
        say("stopped every process of the stack")


def _interrupt(signum, frame) -> NoReturn:
    raise KeyboardInterrupt


def _ports(settings: Settings, *, with_api: bool, local_mlflow: bool) -> dict[str, int]:
    """Setting name -> port of each server the stack starts."""
    ports = {"HEART_MLOPS_AIRFLOW_PORT": settings.airflow_port}
    if local_mlflow:
        ports["HEART_MLOPS_MLFLOW_PORT"] = settings.mlflow_port
    if with_api:
        ports["HEART_MLOPS_API_PORT"] = settings.api_port
    return ports


def _environment(settings: Settings, *, local_mlflow: bool) -> dict[str, str]:
    """The children's environment, AIRFLOW_HOME created; a local MLflow store is set up here
    and then reached through the stack's MLflow server."""
    env = airflow_env(settings)
    if local_mlflow:
        registry.configure(settings)  # migrate the store, create the experiment (file artifacts)
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{settings.mlflow_port}"
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def _start_mlflow(
    children: Children, settings: Settings, env: dict[str, str], timeout: float, say: Say
) -> None:
    tracking_url = env["MLFLOW_TRACKING_URI"]
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
        timeout,
        f"the MLflow server on port {settings.mlflow_port}",
        alive=mlflow.check,
    )
    say(f"MLflow UI      {tracking_url}")


def _start_airflow(
    children: Children, settings: Settings, env: dict[str, str], timeout: float, say: Say
) -> AirflowClient:
    """Airflow standalone, answering and logged in to as admin. -> its client"""
    airflow_home = Path(env["AIRFLOW_HOME"])
    airflow = children.start("airflow", [str(BIN / "airflow"), "standalone"], env)
    client = AirflowClient(f"http://127.0.0.1:{settings.airflow_port}")
    wait_for(
        client.healthy,
        timeout,
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
        f"stored in {airflow_home / PASSWORD_FILE})"
    )
    return client


def _start_api(children: Children, settings: Settings, env: dict[str, str], say: Say) -> None:
    command = ["serve", "--host", "127.0.0.1", "--port", str(settings.api_port)]
    api = children.start("api", [str(BIN / "heart-mlops"), *command], env)
    say(f"API            http://127.0.0.1:{settings.api_port} (started, pid {api.process.pid})")


def _run_dag(
    client: AirflowClient,
    children: Children,
    conf: dict | None,
    say: Say,
    startup_timeout: float,
    run_timeout: float,
) -> None:
    """Once the DAGs are parsed: unpause both, trigger a pipeline run and report its tasks
    until it ends. model_monitoring then runs on its own schedule."""
    for dag_id in (DAG_ID, MONITOR_DAG_ID):
        wait_for(
            lambda dag_id=dag_id: _dag_ready(client, dag_id),
            startup_timeout,
            f"the DAG {dag_id} to be parsed",
            interval=3,
            alive=children.check,
        )
    client.unpause(MONITOR_DAG_ID)
    say(f"unpaused {MONITOR_DAG_ID} (schedule: HEART_MLOPS_MONITOR_SCHEDULE)")
    client.unpause()
    run_id = client.trigger(conf)
    say(f"triggered {DAG_ID} run {run_id}")
    state = follow_run(
        client, run_id, run_timeout, lambda ti: say(_task_line(ti)), alive=children.check
    )
    say(f"{DAG_ID} run {run_id}: {state.upper()}")


def _dag_ready(client: AirflowClient, dag_id: str = DAG_ID) -> bool:
    """True once the DAG is parsed; StackError with the import errors when it failed to."""
    if client.dag_loaded(dag_id):
        return True
    errors = client.import_errors()
    if errors:
        raise StackError("the DAG failed to import:\n" + "\n".join(errors))
    return False


def _task_line(ti: dict) -> str:
    mark = {"success": "ok  ", "failed": "FAIL"}.get(ti["state"], ti["state"])
    return f"  {mark} {ti['task_id']:<30} {ti.get('duration') or 0:7.1f}s"


def _wait_for_champion(children: Children, settings: Settings, say: Say) -> None:
    """Until the API serves a champion: it finds a new one at its next poll of the registry.

    StackError when that takes longer than a poll and a minute, or the API exits."""
    url = f"http://127.0.0.1:{settings.api_port}/health/ready"
    wait_for(
        lambda: http_ok(url),
        settings.api_poll_seconds + 60,
        "the API to serve the champion",
        alive=children.check,
    )
    say(f"API serves the champion: {url}")


def _serve(children: Children, say: Say) -> NoReturn:
    """Until a child exits (StackError) or the stack is interrupted (KeyboardInterrupt)."""
    say("serving; press Ctrl-C to stop")
    while True:
        children.check()
        time.sleep(2)
