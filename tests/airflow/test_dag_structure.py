"""The DAG as Airflow's own loader sees it: tasks, dependencies, params, retries, candidates."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
import yaml

from heart_mlops.errors import DataError
from heart_mlops.graph import retrain_asset
from heart_mlops.settings import Settings
from heart_mlops.step_results import Registered

DAG_FILE = Settings().model_params_path.parents[1] / "dags" / "mlops_pipeline.py"


def load_dag(monkeypatch=None, **env):
    from airflow.dag_processing.dagbag import DagBag

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["mlops_pipeline"]


def dag_module(dag):
    """The DAG file's module, as Airflow's loader imported it."""
    return sys.modules[dag.get_task("register_model").python_callable.__module__]


def scheduler_timetable(dag):
    """The timetable as the scheduler sees it: from the serialized DAG."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable


@pytest.fixture(scope="module")
def dag():
    return load_dag()


def test_task_ids_are_those_users_know(dag):
    assert set(dag.task_ids) == {
        "extract_data",
        "preprocess_data",
        "train_random_forest",
        "train_logistic_regression",
        "train_svm",
        "evaluate_random_forest",
        "evaluate_logistic_regression",
        "evaluate_svm",
        "select_best_model",
        "tune_best_model",
        "register_model",
    }


def test_dependencies(dag):
    upstream = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    assert upstream["extract_data"] == set()
    assert upstream["preprocess_data"] == {"extract_data"}
    for name in ("random_forest", "logistic_regression", "svm"):
        # trainings depend only on the prepared data: they run in parallel
        assert upstream[f"train_{name}"] == {"preprocess_data"}
        assert upstream[f"evaluate_{name}"] == {f"train_{name}", "preprocess_data"}
    assert upstream["select_best_model"] == {
        "evaluate_random_forest",
        "evaluate_logistic_regression",
        "evaluate_svm",
        "preprocess_data",
    }
    assert upstream["tune_best_model"] == {"select_best_model", "preprocess_data"}
    assert upstream["register_model"] == {"tune_best_model", "preprocess_data"}
    assert {t.task_id for t in dag.leaves} == {"register_model"}


def retrain_requests(timetable) -> list[str]:
    """The URIs of the assets a timetable is scheduled on."""
    return [asset.uri for asset in timetable.asset_condition.objects]


def test_schedule_and_run_limits(dag):
    """The cron of the setting (@daily by default) or model_monitoring's retrain request."""
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable

    timetable = scheduler_timetable(dag)
    assert isinstance(timetable, AssetOrTimeSchedule)
    assert timetable.summary == "Asset or 0 0 * * *"
    assert isinstance(timetable.timetable, CronTriggerTimetable)
    assert retrain_requests(timetable) == [retrain_asset().uri]
    assert retrain_asset().uri == "heart://retrain-request/"  # as Airflow normalises it
    assert dag.catchup is False
    assert dag.max_active_runs == 1


@pytest.mark.parametrize(
    ("value", "summary"),
    [("@hourly", "Asset or 0 * * * *"), ("30 4 * * 1", "Asset or 30 4 * * 1"), ("none", "Asset")],
)
def test_schedule_is_a_setting(monkeypatch, value, summary):
    dag = load_dag(monkeypatch, HEART_MLOPS_DAG_SCHEDULE=value)
    timetable = scheduler_timetable(dag)
    assert timetable.summary == summary
    # with no cron the retrain request alone starts it
    assert retrain_requests(timetable) == [retrain_asset().uri]
    assert timetable.can_be_scheduled is True


@pytest.mark.parametrize("minutes_after_midnight", [1, 30, 140])
def test_unpausing_waits_for_the_next_tick(dag, monkeypatch, minutes_after_midnight):
    """The scheduler's view (the serialized timetable): no run for the tick just passed."""
    import pendulum
    from airflow.timetables import trigger
    from airflow.timetables.base import TimeRestriction

    now = pendulum.datetime(2026, 11, 29, tz="UTC").add(minutes=minutes_after_midnight)
    monkeypatch.setattr(trigger, "utcnow", lambda: now)
    first = scheduler_timetable(dag).next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
    )
    assert first.run_after == pendulum.datetime(2026, 11, 30, tz="UTC")


@pytest.mark.parametrize(
    ("run_type", "events", "expected"),
    [
        ("scheduled", [], {"triggered_by": "scheduled"}),
        ("manual", [], {"triggered_by": "manual"}),
        (
            "asset_triggered",
            [
                ({"reason": "data drift: old"}, "2026-11-30T10:00:00+00:00"),
                (
                    {"reason": "data drift: 0.46 >= 0.3 (age, cp)", "report_uri": "s3://r.html"},
                    "2026-11-30T11:00:00+00:00",
                ),
            ],
            {
                "triggered_by": "asset_triggered",
                "trigger_reason": "data drift: 0.46 >= 0.3 (age, cp)",
                "trigger_report_uri": "s3://r.html",
                "trigger_requested_by": "model_monitoring/run-2026-11-30T11:00:00+00:00",
            },
        ),
    ],
)
def test_the_run_says_why_it_runs(dag, run_type, events, expected):
    """The latest retrain request's extra, as the task context gives the asset events."""
    from datetime import datetime

    from airflow.sdk.api.datamodels._generated import AssetEventDagRunReference

    module = dag_module(dag)
    references = [
        AssetEventDagRunReference(
            asset={"name": "retrain_request", "uri": retrain_asset().uri, "extra": {}},
            extra=extra,
            source_task_id="request_retrain",
            source_dag_id="model_monitoring",
            source_run_id=f"run-{when}",
            source_map_index=-1,
            source_aliases=[],
            timestamp=datetime.fromisoformat(when),
        )
        for extra, when in events
    ]
    assert module.run_trigger(run_type, references) == expected


def test_params_for_trigger_with_config(dag):
    params = dag.params
    assert set(params.keys()) == {"data_uri", "synthetic", "tuning_trials", "selection_metric"}
    assert params["synthetic"] is False
    assert params["data_uri"] is None and params["tuning_trials"] is None
    schema = params.get_param("selection_metric").schema
    assert set(schema["enum"]) == {
        None,
        "log_loss",
        "brier",
        "roc_auc",
        "accuracy",
        "f1",
        "precision",
        "recall",
    }
    # invalid values are refused before a run starts
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        params.get_param("tuning_trials").resolve(-1)
    with pytest.raises(ParamValidationError):
        params.get_param("selection_metric").resolve("auc")


def test_io_tasks_retry_with_backoff(dag):
    for task_id in ("extract_data", "preprocess_data", "select_best_model", "register_model"):
        task = dag.get_task(task_id)
        assert task.retries >= 2, task_id
        assert task.retry_exponential_backoff > 1, task_id
        assert task.retry_delay >= timedelta(seconds=5)


def test_data_error_fails_at_once(dag):
    from airflow.sdk.exceptions import AirflowFailException

    module = dag_module(dag)
    with (
        pytest.raises(AirflowFailException, match="invalid data"),
        module._fail_at_once_on_bad_data(),
    ):
        raise DataError("data validation failed:\n  age: 500 not in 1-120")


def test_a_yaml_entry_adds_a_train_evaluate_pair(monkeypatch, tmp_path):
    params = yaml.safe_load(Settings().model_params_path.read_text())
    params["candidates"]["gradient_boosting"] = {
        "estimator": "sklearn.ensemble.GradientBoostingClassifier",
        "params": {},
    }
    path = tmp_path / "model_params.yaml"
    path.write_text(yaml.safe_dump(params))
    dag = load_dag(monkeypatch, HEART_MLOPS_MODEL_PARAMS_PATH=str(path))
    assert {"train_gradient_boosting", "evaluate_gradient_boosting"} <= set(dag.task_ids)
    assert "evaluate_gradient_boosting" in dag.get_task("select_best_model").upstream_task_ids
    assert len(dag.task_ids) == 13


def test_variables_published_from_the_registered_model(dag):
    module = dag_module(dag)
    registered = Registered(
        model_name="heart_disease_classifier",
        version="4",
        champion=False,
        decision="holdout_roc_auc 0.90 does not beat champion v3 0.92",
        candidate="svm",
        label="tuned",
        params={"C": 2.0},
        cv={"cv_roc_auc_mean": 0.91},
        holdout={"holdout_accuracy": 0.83},
        threshold=0.5,
        synthetic=False,
        run_key="manual__1",
    )
    assert module.airflow_variables(registered) == {
        "best_model_type": "svm",
        "best_model_tuning_label": "tuned",
        "best_model_tuned_params": {"C": 2.0},
        "best_model_tuned_accuracy": 0.83,
        "best_model_cv_roc_auc": 0.91,
        "best_model_version": {"version": "4", "champion": False},
    }
