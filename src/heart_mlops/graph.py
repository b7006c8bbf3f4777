"""The pipeline's graph: the one place that orders the steps, and what the DAGs share.

`wire` is written against `Steps`, so the same graph runs in this process
(`pipeline.run_pipeline`) and as the Airflow DAG (`airflow/dags/mlops_pipeline.py`, where each
call creates a task and returns its XCom reference). Light on purpose: the DAG files import it
when Airflow parses them (Airflow itself only inside the functions that build its objects).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Protocol

DAG_ID = "mlops_pipeline"
MONITOR_DAG_ID = "model_monitoring"
# the Airflow asset model_monitoring emits to ask for a retrain; mlops_pipeline is scheduled on it
RETRAIN_ASSET_URI = "heart://retrain-request"

# storage and MLflow calls: a server restart should not fail the run
IO_RETRIES = {
    "retries": 3,
    "retry_delay": timedelta(seconds=10),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
}


def retrain_asset():
    """The Airflow Asset of a retrain request (`RETRAIN_ASSET_URI`)."""
    from airflow.sdk import Asset

    return Asset(name="retrain_request", uri=RETRAIN_ASSET_URI)


def cron_timetable(schedule: str | None):
    """The timetable of a DAG schedule setting (cron or preset, UTC; None: triggered only): a
    cron schedule that waits for its next tick when the DAG is unpaused.

    Airflow's default for a cron string (`run_immediately=False`) still runs the last tick at
    once if it is younger than a tenth of the period: 2.4 h after midnight for `@daily`.
    `@once` and `@continuous` are passed through as Airflow reads them.
    """
    if schedule is None or schedule in ("@once", "@continuous"):
        return schedule
    from airflow.sdk import CronTriggerTimetable

    return CronTriggerTimetable(schedule, timezone="UTC", run_immediately=timedelta(0))


def task_id(step: str, candidate: str) -> str:
    """The id of a per-candidate step: `train_<candidate>` or `evaluate_<candidate>`."""
    return f"{step}_{candidate}"


class Steps(Protocol):
    """One method per step; what flows between them is opaque to the graph."""

    def extract_data(self) -> Any: ...
    def preprocess_data(self, extracted: Any) -> Any: ...
    def train_candidate(self, name: str, prepared: Any) -> Any: ...
    def evaluate_candidate(self, name: str, trained: Any, prepared: Any) -> Any: ...
    def select_best_model(self, evaluations: list[Any], prepared: Any) -> Any: ...
    def tune_best_model(self, best: Any, prepared: Any) -> Any: ...
    def register_model(self, tuned: Any, prepared: Any) -> Any: ...


def wire(steps: Steps, candidates: Iterable[str]) -> Any:
    """extract -> preprocess -> train and evaluate each candidate -> select -> tune -> register.

    -> what `steps.register_model` returned."""
    prepared = steps.preprocess_data(steps.extract_data())
    evaluations = [
        steps.evaluate_candidate(name, steps.train_candidate(name, prepared), prepared)
        for name in candidates
    ]
    best = steps.select_best_model(evaluations, prepared)
    return steps.register_model(steps.tune_best_model(best, prepared), prepared)
