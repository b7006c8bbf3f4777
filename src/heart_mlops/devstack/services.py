"""How the stack's services start: the environment's executables, the Airflow environment of the
local home, the DAG run once without a scheduler (`heart-mlops pipeline`), `mlflow server`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from heart_mlops.devstack import StackError
from heart_mlops.graph import DAG_ID
from heart_mlops.settings import PROJECT_ROOT, Settings

DAGS_FOLDER = PROJECT_ROOT / "airflow" / "dags"
BIN = Path(sys.executable).parent  # airflow, mlflow, heart-mlops of this environment


def mlflow_server_command(
    backend_uri: str, port: int, *artifacts: str, workers: int = 1
) -> list[str]:
    """Returns the argv of `mlflow server` on a loopback port; `artifacts`: its artifact options."""
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


def airflow_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Returns the environment of the embedded Airflow: `base` (default os.environ) with its
    home inside the project home and the project DAGs. Raises nothing; creates no directory."""
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
    """`airflow dags test mlops_pipeline` with `conf` on the SQLite metadata of the local home,
    output appended to `log_file` (default: this process's stdout and stderr).

    Returns the exit code of `airflow dags test`. Raises StackError when `airflow db migrate`
    fails, OSError when Airflow or the log file cannot be opened.
    """
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
