"""Wall time of the `mlops_pipeline` DAG and each task's share, embedded and under Celery.

    python benchmarks/bench_dag.py               # embedded: `heart-mlops pipeline` (SQLite)
    python benchmarks/bench_dag.py --celery      # also the Celery integration test's run
    python benchmarks/bench_dag.py --profile default   # embedded with the default settings

Times come from the Airflow task instances (start and end dates). The share of a task is its
duration over the run's wall time; parallel tasks can add up to more than 100%.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from heart_mlops.devstack.services import BIN, airflow_env
from heart_mlops.settings import PROJECT_ROOT, Settings

PROFILES = {
    # the tests' profile (tests/conftest.py), also the Celery test's
    "fast": {
        "HEART_MLOPS_CV_FOLDS": "3",
        "HEART_MLOPS_CV_REPEATS": "1",
        "HEART_MLOPS_TUNING_TRIALS": "2",
        "HEART_MLOPS_N_JOBS": "2",
    },
    "default": {},
}


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def embedded(profile: dict[str, str]) -> dict:
    """`heart-mlops pipeline` on a fresh home; timings from its SQLite metadata."""
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        env = {**airflow_env(settings), **profile}
        command = [str(BIN / "heart-mlops"), "pipeline"]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        total = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"heart-mlops pipeline failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        with sqlite3.connect(settings.home_dir / "airflow" / "airflow.db") as db:
            run_start, run_end = db.execute("select start_date, end_date from dag_run").fetchone()
            rows = db.execute("select task_id, start_date, end_date from task_instance").fetchall()
    return {
        "mode": "embedded (airflow dags test, SQLite)",
        "command": "heart-mlops pipeline",
        "wall_seconds": _seconds(run_start, run_end),
        "process_seconds": total,
        "tasks": {task: _seconds(start, end) for task, start, end in rows},
    }


def celery() -> dict:
    """The Celery integration test's run; it writes its timings where we ask."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "celery.json"
        command = [
            str(BIN / "pytest"),
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_celery_dag.py",
        ]
        done = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "HEART_MLOPS_BENCH_JSON": str(target)},
        )
        if done.returncode or not target.exists():
            sys.exit(f"the Celery test failed:\n{done.stdout[-3000:]}")
        result = json.loads(target.read_text())
    return {
        **result,
        "mode": "CeleryExecutor (1 worker, concurrency 2)",
        "command": "pytest tests/integration/test_celery_dag.py",
    }


def print_table(result: dict) -> None:
    wall = result["wall_seconds"]
    print(f"\n{result['mode']}: DAG run wall time {wall:.1f}s  ({result['command']})")
    print(f"  {'task':<30} {'seconds':>8} {'share':>7}")
    for task, took in sorted(result["tasks"].items(), key=lambda kv: -kv[1]):
        print(f"  {task:<30} {took:8.1f} {100 * took / wall:6.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celery", action="store_true", help="also time the Celery run")
    parser.add_argument("--profile", choices=PROFILES, default="fast")
    args = parser.parse_args()
    results = [embedded(PROFILES[args.profile])]
    if args.celery:
        results.append(celery())
    for result in results:
        print_table(result)
    if len(results) == 2:
        print(
            f"\nCelery / embedded wall time: "
            f"{results[1]['wall_seconds'] / results[0]['wall_seconds']:.2f}"
        )


if __name__ == "__main__":
    main()
