"""Airflow tests: the DAG as Airflow loads it, and the DAG run by `heart-mlops pipeline`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from heart_mlops.devstack.services import BIN, airflow_env
from heart_mlops.settings import Settings
from tests.conftest import FAST_PROFILE

# Airflow reads its home when first imported: never the developer's ~/airflow
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

FAST_ENV = {f"HEART_MLOPS_{key.upper()}": str(value) for key, value in FAST_PROFILE.items()}


def pipeline_env(settings: Settings) -> dict[str, str]:
    """Environment of `heart-mlops pipeline` on the test's home, fast profile."""
    return {**airflow_env(settings), **FAST_ENV}


def run_cli(settings: Settings, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "heart-mlops"), *args],
        env=pipeline_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def task_states(settings: Settings) -> dict[str, dict[str, tuple]]:
    """run_id -> task_id -> (state, try_number), from the embedded SQLite metadata."""
    db = settings.home_dir / "airflow" / "airflow.db"
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "select run_id, task_id, state, try_number from task_instance"
        ).fetchall()
    runs: dict[str, dict[str, tuple]] = {}
    for run_id, task_id, state, try_number in rows:
        runs.setdefault(run_id, {})[task_id] = (state, try_number)
    return runs


def airflow_variables(settings: Settings, tmp: Path) -> dict:
    """Every Airflow Variable of the embedded metadata (decrypted by Airflow itself)."""
    target = tmp / "variables.json"
    subprocess.run(
        [str(BIN / "airflow"), "variables", "export", str(target)],
        env=pipeline_env(settings),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {
        key: json.loads(value) if isinstance(value, str) else value
        for key, value in json.loads(target.read_text()).items()
    }
