"""The heart-disease pipeline as an Airflow DAG.

Wiring only: the graph is `heart_mlops.graph.wire`, the steps those of `heart_mlops.pipeline`.
Every task builds settings from the environment (so a Celery worker uses its own stack's
settings) with the run's params over them, and passes its step's result through XCom as a
small dict; data and models move through the artifact store under the run's own prefix.
A candidate added to model_params.yaml adds its train/evaluate pair.

Scheduled on its cron (HEART_MLOPS_DAG_SCHEDULE) or on a retrain request of model_monitoring
(the asset `heart_mlops.graph.RETRAIN_ASSET_URI`), whichever comes first; the run's MLflow tags
say which.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import get_args

import yaml
from airflow.sdk import AssetOrTimeSchedule, Param, Variable, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from heart_mlops.errors import DataError
from heart_mlops.graph import DAG_ID, IO_RETRIES, cron_timetable, retrain_asset, task_id, wire
from heart_mlops.settings import SelectionMetric, Settings
from heart_mlops.step_results import (
    Evaluated,
    Extracted,
    Prepared,
    Registered,
    Selected,
    Trained,
    Tuned,
)

COMPUTE_RETRIES = {"retries": 1, "retry_delay": timedelta(seconds=30)}

log = logging.getLogger(__name__)
_settings_at_parse = Settings()
# names only: parsing stays fast (no sklearn import); the tasks validate each entry
CANDIDATES = list(yaml.safe_load(_settings_at_parse.model_params_path.read_text())["candidates"])


def _schedule(setting: str | None):
    """The setting's cron timetable or a retrain request of model_monitoring, whichever comes
    first; the request alone when the setting is none."""
    timetable = cron_timetable(setting)
    if timetable is None:
        return [retrain_asset()]
    if isinstance(timetable, str):  # @once, @continuous: Airflow's own, not combined
        return timetable
    return AssetOrTimeSchedule(timetable=timetable, assets=[retrain_asset()])


def run_trigger(run_type: str, events: list) -> dict[str, str]:
    """Why a DAG run runs, as MLflow tags: `triggered_by` (the run type: scheduled, manual,
    asset_triggered, ...) and, for a retrain request, the latest request's `trigger_reason`,
    `trigger_report_uri`, `trigger_window` and the monitoring run that asked
    (`trigger_requested_by`, dag id/run id).
    `events`: the run's triggering asset events (objects with `extra` and `source_run_id`)."""
    trigger = {"triggered_by": str(getattr(run_type, "value", run_type))}
    if events:
        latest = max(events, key=lambda event: event.timestamp)
        extra = latest.extra or {}
        for key in ("reason", "report_uri", "window"):
            if extra.get(key):
                trigger[f"trigger_{key}"] = str(extra[key])
        if latest.source_run_id:
            trigger["trigger_requested_by"] = f"{latest.source_dag_id}/{latest.source_run_id}"
    return trigger


def _settings() -> Settings:
    """Settings from the environment, with the run's params over them."""
    params = get_current_context()["params"]
    return Settings().with_run_options(
        selection_metric=params.get("selection_metric"), tuning_trials=params.get("tuning_trials")
    )


@contextlib.contextmanager
def _fail_at_once_on_bad_data():
    """Invalid data will not get better by retrying: fail the task without retries."""
    try:
        yield
    except DataError as exc:
        log.error("invalid data, failing without retries:\n%s", exc)
        raise AirflowFailException(f"invalid data: {exc}") from exc


def airflow_variables(registered: Registered) -> dict:
    """The Variables the DAG publishes about the model it registered."""
    return {
        "best_model_type": registered.candidate,
        "best_model_tuning_label": registered.label,
        "best_model_tuned_params": registered.params,
        "best_model_tuned_accuracy": registered.holdout["holdout_accuracy"],
        "best_model_cv_roc_auc": registered.cv["cv_roc_auc_mean"],
        "best_model_version": {"version": registered.version, "champion": registered.champion},
    }


@task(**IO_RETRIES)
def extract_data():
    from heart_mlops import pipeline

    context = get_current_context()
    params = context["params"]
    events = [e for found in context["triggering_asset_events"].values() for e in found]
    trigger = run_trigger(context["dag_run"].run_type, events)
    log.info("run %s: %s", context["run_id"], trigger)
    with _fail_at_once_on_bad_data():
        return pipeline.extract_data(
            _settings(),
            run_key=context["run_id"],
            data_uri=params["data_uri"],
            synthetic=params["synthetic"],
            trigger=trigger,
        ).to_xcom()


@task(**IO_RETRIES)
def preprocess_data(extracted: dict):
    from heart_mlops import pipeline

    with _fail_at_once_on_bad_data():
        return pipeline.preprocess_data(_settings(), Extracted.from_xcom(extracted)).to_xcom()


@task(**COMPUTE_RETRIES)
def train_candidate(name: str, prepared: dict):
    from heart_mlops import pipeline

    return pipeline.train_candidate(_settings(), name, Prepared.from_xcom(prepared)).to_xcom()


@task(**COMPUTE_RETRIES)
def evaluate_candidate(trained: dict, prepared: dict):
    from heart_mlops import pipeline

    return pipeline.evaluate_candidate(
        _settings(), Trained.from_xcom(trained), Prepared.from_xcom(prepared)
    ).to_xcom()


@task(**IO_RETRIES)
def select_best_model(evaluations: list[dict], prepared: dict):
    from heart_mlops import pipeline

    return pipeline.select_best_model(
        _settings(),
        [Evaluated.from_xcom(e) for e in evaluations],
        parent_run_id=prepared["parent_run_id"],
    ).to_xcom()


@task(**COMPUTE_RETRIES)
def tune_best_model(best: dict, prepared: dict):
    from heart_mlops import pipeline

    return pipeline.tune_best_model(
        _settings(), Selected.from_xcom(best), Prepared.from_xcom(prepared)
    ).to_xcom()


@task(**IO_RETRIES)
def register_model(tuned: dict, prepared: dict):
    from heart_mlops import pipeline

    registered = pipeline.register_model(
        _settings(), Tuned.from_xcom(tuned), Prepared.from_xcom(prepared)
    )
    for key, value in airflow_variables(registered).items():
        Variable.set(key, value, serialize_json=True)
    log.info(
        "registered %s version %s (%s): %s",
        registered.model_name,
        registered.version,
        "champion" if registered.champion else "challenger",
        registered.decision,
    )
    return registered.to_xcom()


class _Tasks:
    """`graph.Steps` as TaskFlow tasks: each call adds a task and returns its XCom reference."""

    extract_data = staticmethod(extract_data)
    preprocess_data = staticmethod(preprocess_data)
    select_best_model = staticmethod(select_best_model)
    tune_best_model = staticmethod(tune_best_model)
    register_model = staticmethod(register_model)

    @staticmethod
    def train_candidate(name, prepared):
        return train_candidate.override(task_id=task_id("train", name))(name, prepared)

    @staticmethod
    def evaluate_candidate(name, trained, prepared):
        return evaluate_candidate.override(task_id=task_id("evaluate", name))(trained, prepared)


@dag(
    dag_id=DAG_ID,
    description="Extract, validate, train candidates in parallel, select, tune, register.",
    # no start_date: unpausing waits for the next scheduled time instead of running at once;
    # a retrain request queues a run at once (behind a running one: max_active_runs=1)
    schedule=_schedule(_settings_at_parse.dag_schedule),
    catchup=False,
    max_active_runs=1,
    tags=["heart-mlops"],
    params={
        "data_uri": Param(
            None,
            type=["null", "string"],
            description="Data file: path, file:// or s3:// URI (default: setting).",
        ),
        "synthetic": Param(
            False,
            type="boolean",
            description="Seeded synthetic data; its model never becomes champion.",
        ),
        "tuning_trials": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Optuna trials (default: setting).",
        ),
        "selection_metric": Param(
            None,
            type=["null", "string"],
            enum=[None, *get_args(SelectionMetric)],
            description="Metric that picks the best candidate (default: setting).",
        ),
    },
    doc_md=__doc__,
)
def mlops_pipeline():
    wire(_Tasks, CANDIDATES)


pipeline_dag = mlops_pipeline()
