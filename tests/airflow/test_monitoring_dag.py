"""model_monitoring: the DAG as Airflow's loader sees it, and its decision run for real.

The structure tests read the DAG from its file. The run tests execute the DAG with Airflow's
`dag.test()` on the SQLite metadata of the test session's AIRFLOW_HOME, every task for real
(expire_predictions on a prediction log of the test's own) except the monitoring step, which
returns a chosen result: they check what the wiring does with it, Airflow's AssetEvent rows
and the queue that starts mlops_pipeline. The monitoring step itself, on streams replayed
through the API, is run under the CeleryExecutor in tests/integration/test_celery_dag.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from heart_mlops.devstack.services import BIN, DAGS_FOLDER
from heart_mlops.graph import DAG_ID, MONITOR_DAG_ID, retrain_asset
from heart_mlops.step_results import Monitored
from tests.airflow.test_dag_structure import scheduler_timetable

DAG_FILE = DAGS_FOLDER / "model_monitoring.py"


def load_dag(monkeypatch=None, **env):
    from airflow.dag_processing.dagbag import DagBag

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[MONITOR_DAG_ID]


@pytest.fixture(scope="module")
def dag():
    return load_dag()


def monitored(triggered: bool) -> Monitored:
    drifted = ["age", "cp", "thal", "chol"] if triggered else []
    return Monitored(
        window_start="2026-11-30T10:00:00+00:00",
        window_end="2026-11-30T11:00:00+00:00",
        rows=240,
        dataset_drift=triggered,
        drift_reason="drift share 0.46 >= 0.3" if triggered else "drift share 0.08 < 0.3",
        drift_share=0.46 if triggered else 0.08,
        drifted_features=drifted,
        live=None,
        triggered=triggered,
        trigger_reason="data drift: 0.46 >= 0.3 (age, cp, thal, chol)"
        if triggered
        else "no trigger: drift share 0.08 < 0.3",
        report_uri="file:///store/monitoring/w/drift-report-v1.html",
        summary_uri="file:///store/monitoring/w/summary.json",
        mlflow_run_id="0123abcd",
    )


def test_tasks_and_their_order(dag):
    assert set(dag.task_ids) == {"monitor", "expire_predictions", "request_retrain"}
    upstream = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    assert upstream == {
        "monitor": set(),
        "expire_predictions": {"monitor"},
        "request_retrain": {"monitor", "expire_predictions"},
    }


def test_only_request_retrain_emits_the_retrain_asset(dag):
    assert [a.uri for a in dag.get_task("request_retrain").outlets] == [retrain_asset().uri]
    assert dag.get_task("monitor").outlets == []
    assert dag.get_task("expire_predictions").outlets == []


def test_schedule_and_run_limits(dag):
    from airflow.timetables.trigger import CronTriggerTimetable

    timetable = scheduler_timetable(dag)
    assert isinstance(timetable, CronTriggerTimetable)
    assert timetable.summary == "0 * * * *"  # the default setting, @hourly
    # the same helper as mlops_pipeline: unpausing waits for the next tick
    assert timetable._run_immediately == timedelta(0)
    assert dag.catchup is False
    assert dag.max_active_runs == 1


@pytest.mark.parametrize(("value", "summary"), [("*/15 * * * *", "*/15 * * * *"), ("none", "None")])
def test_schedule_is_a_setting(monkeypatch, value, summary):
    dag = load_dag(monkeypatch, HEART_MLOPS_MONITOR_SCHEDULE=value)
    assert scheduler_timetable(dag).summary == summary


def test_the_request_carries_reason_report_and_window(dag):
    module = sys.modules[dag.get_task("monitor").python_callable.__module__]
    assert module.retrain_request(monitored(False)) is None
    assert module.retrain_request(monitored(True)) == {
        "reason": "data drift: 0.46 >= 0.3 (age, cp, thal, chol)",
        "report_uri": "file:///store/monitoring/w/drift-report-v1.html",
        "window": "2026-11-30T10:00:00+00:00/2026-11-30T11:00:00+00:00",
    }


def test_a_window_param_that_is_not_a_time_fails_naming_it(dag):
    from airflow.sdk.exceptions import AirflowFailException

    module = sys.modules[dag.get_task("monitor").python_callable.__module__]
    assert module.window_param("since", None) is None
    assert module.window_param("until", "2026-11-30T11:00:00Z").isoformat() == (
        "2026-11-30T11:00:00+00:00"
    )
    with pytest.raises(AirflowFailException, match=r"param since = 'yesterday' is not an ISO"):
        module.window_param("since", "yesterday")


# --- the DAG run for real: dag.test() on SQLite ------------------------------------------------


@pytest.fixture(scope="module")
def metadata(tmp_path_factory):
    """The session's Airflow metadata migrated, both DAGs in it, mlops_pipeline unpaused (a
    paused DAG gets no queued asset events). -> the environment of the Airflow commands."""
    env = {
        **os.environ,
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "HEART_MLOPS_HOME": str(tmp_path_factory.mktemp("monitoring-home")),
    }
    for command in (["db", "migrate"], ["dags", "reserialize"], ["dags", "unpause", DAG_ID]):
        done = subprocess.run(
            [str(BIN / "airflow"), *command], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return env


def run_monitoring(monkeypatch, env: dict, result: Monitored):
    """One model_monitoring run by dag.test() whose monitor step returns `result`."""
    from heart_mlops import pipeline

    for key in ("AIRFLOW__CORE__DAGS_FOLDER", "HEART_MLOPS_HOME"):
        monkeypatch.setenv(key, env[key])
    seen = []

    def chosen_result(settings, *, since=None, until=None, now=None):
        seen.append({"since": since, "until": until, "now": now})
        return result

    monkeypatch.setattr(pipeline, "monitor", chosen_result)
    run = load_dag().test()
    assert len(seen) == 1 and seen[0]["now"] is not None  # the run's time ends the window
    return run


def asset_rows(run_id: str | None = None):
    """(retrain AssetEvent rows, of `run_id` when given; AssetDagRunQueue rows of the pipeline)."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.uri == retrain_asset().uri))
        events = (
            []
            if asset is None
            else [
                (e.source_dag_id, e.source_task_id, e.source_run_id, dict(e.extra))
                for e in session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset.id))
                if run_id is None or e.source_run_id == run_id
            ]
        )
        queued = session.scalars(
            select(AssetDagRunQueue.target_dag_id).where(AssetDagRunQueue.target_dag_id == DAG_ID)
        ).all()
    return events, list(queued)


def states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}  # states are str


@pytest.mark.airflow
def test_no_trigger_skips_the_request_and_emits_nothing(metadata, monkeypatch):
    run = run_monitoring(monkeypatch, metadata, monitored(False))
    assert states(run) == {
        "monitor": "success",
        "expire_predictions": "success",
        "request_retrain": "skipped",
    }
    assert asset_rows() == ([], [])


@pytest.mark.airflow
def test_a_trigger_emits_the_request_and_queues_the_pipeline(metadata, monkeypatch):
    # a pipeline run waiting already (no scheduler runs here, so it stays queued)
    done = subprocess.run(
        [str(BIN / "airflow"), "dags", "trigger", DAG_ID],
        env=metadata,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    run = run_monitoring(monkeypatch, metadata, monitored(True))
    assert set(states(run).values()) == {"success"}
    # the request says it waits behind that run
    returned = run.get_task_instance("request_retrain").xcom_pull(task_ids="request_retrain")
    assert returned["pipeline_runs_ahead"] == 1
    events, queued = asset_rows(run.run_id)
    assert events == [
        (
            MONITOR_DAG_ID,
            "request_retrain",
            run.run_id,
            {
                "reason": "data drift: 0.46 >= 0.3 (age, cp, thal, chol)",
                "report_uri": "file:///store/monitoring/w/drift-report-v1.html",
                "window": "2026-11-30T10:00:00+00:00/2026-11-30T11:00:00+00:00",
            },
        )
    ]
    assert queued == [DAG_ID]  # the scheduler starts an asset-triggered mlops_pipeline run
