"""The embedded stack behind `heart-mlops up` (`make run`).

`up` starts, each in a process group of its own: an MLflow server over the local store, Airflow
standalone (SQLite, LocalExecutor, the project's DAGs) and the API when its command exists. It
triggers `mlops_pipeline` once, shows its tasks as they finish and serves until Ctrl-C, which
stops every child.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from heart_mlops.devstack import StackError
from heart_mlops.devstack.airflow_client import AirflowClient, admin_password, follow_run
from heart_mlops.devstack.processes import Children, check_ports, http_ok, wait_for
from heart_mlops.devstack.services import BIN, DAG_ID, airflow_env, mlflow_server_command
from heart_mlops.settings import Settings


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
