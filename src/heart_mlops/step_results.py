"""What each pipeline step returns: frozen dataclasses, one per step.

Steps hand these to each other in-process. Where a result crosses Airflow's XCom it becomes a
plain JSON-able dict with `to_xcom` and comes back with `from_xcom`, the one place where that
happens. Data and models never travel here: only URIs, metrics and run ids.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Self


class StepResult:
    """Base of the step results: the conversion to and from XCom."""

    def to_xcom(self) -> dict[str, Any]:
        """A plain dict of JSON types (nested results become dicts too)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def extending(cls, base: StepResult, **fields: Any) -> Self:
        """A result of `cls` (a subclass of `base`'s class): `base`'s fields plus `fields`."""
        inherited = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}  # type: ignore[arg-type]
        return cls(**inherited, **fields)

    @classmethod
    def from_xcom(cls, payload: dict[str, Any]) -> Self:
        """The result back from `to_xcom`'s dict. KeyError names a field that is missing."""
        hints = typing.get_type_hints(cls)
        values = {}
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = payload[item.name]
            kind = hints[item.name]
            if isinstance(kind, type) and issubclass(kind, StepResult):
                value = kind.from_xcom(value)
            values[item.name] = value
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class Extracted(StepResult):
    """`extract_data`: the source copied into the pipeline run's own prefix."""

    run_key: str  # the pipeline run (Airflow's run id, or `local-<UTC time>`)
    prefix: str  # artifact-store URI under which this run writes everything
    raw_uri: str  # the copied source file
    source: str  # where it came from: a path or URI, or "synthetic"
    synthetic: bool  # seeded synthetic data: its model never becomes champion
    parent_run_id: str  # the pipeline's parent MLflow run
    sha256: str  # of the source bytes


@dataclass(frozen=True, kw_only=True)
class Prepared(Extracted):
    """`preprocess_data`: validated, deduplicated data split into training part and holdout."""

    validated_uri: str  # Parquet: every distinct valid row
    train_uri: str  # Parquet: the training part
    holdout_uri: str  # Parquet: the stratified holdout
    fingerprint: dict[str, Any]  # data.Dataset.fingerprint: sha256, rows_raw, rows_distinct, ...
    rows_train: int
    rows_holdout: int


@dataclass(frozen=True, kw_only=True)
class Trained(StepResult):
    """`train_candidate`: one candidate fitted on the training part."""

    name: str  # the candidate's name in model_params.yaml
    model_uri: str  # the fitted pipeline (skops) in the artifact store
    run_id: str  # its MLflow run
    params: dict[str, Any]  # the estimator parameters of model_params.yaml


@dataclass(frozen=True, kw_only=True)
class Evaluated(Trained):
    """`evaluate_candidate`: a trained candidate with its scores."""

    # cv_<metric>_mean / cv_<metric>_std of repeated k-fold CV, and holdout_<metric>
    metrics: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class Selected(Evaluated):
    """`select_best_model`: the candidate with the best mean CV score, and the ranking."""

    selection_metric: str
    ranking: list[dict[str, Any]]  # best first: {name, cv_<metric>_mean}


@dataclass(frozen=True, kw_only=True)
class Tuned(StepResult):
    """`tune_best_model`: the winner refitted with tuned or untuned parameters."""

    name: str
    label: str  # "tuned" or "untuned": which scored better on fresh CV folds
    params: dict[str, Any]  # the parameters the final model was fitted with
    model_uri: str
    cv: dict[str, float]  # the chosen parameters' CV scores (cv_<metric>_mean/std, calibration)
    selection_metric: str
    trials: int
    threshold: float  # decision threshold on P(disease), by the threshold policy
    evidence_uri: str  # JSON: evaluation.clinical_evidence of the chosen model, and candidates


@dataclass(frozen=True, kw_only=True)
class Registered(StepResult):
    """`register_model`: the registered version and the promotion decision."""

    model_name: str
    version: str
    champion: bool  # the version holds @champion now
    decision: str  # why it was promoted or not
    candidate: str
    label: str
    params: dict[str, Any]
    cv: dict[str, float]
    holdout: dict[str, float]  # holdout_<metric> of this version, at its threshold
    threshold: float
    synthetic: bool
    run_key: str


@dataclass(frozen=True, kw_only=True)
class PipelineResult:
    """`run_pipeline`: every step's result and its wall time in seconds."""

    data: Prepared
    evaluations: list[Evaluated]
    best: Selected
    tuned: Tuned
    registered: Registered
    timings: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class Monitored(StepResult):
    """`monitor`: drift and live performance of one window of the prediction log."""

    window_start: str  # ISO 8601, UTC, inclusive
    window_end: str  # ISO 8601, UTC, exclusive
    rows: int  # champion rows in the window
    dataset_drift: bool  # False, with `drift_reason`, when there are too few rows
    drift_reason: str  # why dataset_drift is what it is, in one line
    drift_share: float | None  # share of drifted features; None without enough rows
    drifted_features: list[str]  # names, most drifted first
    live: dict[str, Any] | None  # the champion's outcome metrics with 95 % intervals, or None
    triggered: bool  # a retrain is asked for
    trigger_reason: str  # why (or why not), in one line
    report_uri: str | None  # the Evidently HTML report in the artifact store
    summary_uri: str | None  # the JSON summary beside it
    mlflow_run_id: str | None  # the run of the `monitoring` experiment
    model_version: str | None = None  # the version summarised: the latest served in the window
    # one entry per version served in the window (version, rows, drift, live, shadow)
    versions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
