"""The pipeline's graph: the one place that orders the steps.

`wire` is written against `Steps`, so the same graph runs in this process
(`pipeline.run_pipeline`) and as the Airflow DAG (`airflow/dags/mlops_pipeline.py`, where each
call creates a task and returns its XCom reference). Light on purpose: the DAG file imports it
when Airflow parses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

DAG_ID = "mlops_pipeline"


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
