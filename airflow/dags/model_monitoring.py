"""Model monitoring as an Airflow DAG: drift and live performance of the prediction log.

Wiring only: the steps are `heart_mlops.pipeline.monitor` and `expire_predictions`. Every task
builds settings from the environment (the prediction log and stores of its own stack) and
passes its step's result through XCom as a small dict.

monitor (the last schedule period, or the run's `since`/`until`) -> expire_predictions (log
rows past the retention setting) -> request_retrain, which emits the asset
`heart_mlops.graph.RETRAIN_ASSET_URI` (extra: reason, report_uri, window) only when monitoring
asked for a retrain, and is skipped otherwise: a skipped task emits no asset event.
`mlops_pipeline` is scheduled on that asset; the champion still moves only through its gate.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from heart_mlops.errors import HeartMlopsError, RegistryError, StorageError
from heart_mlops.graph import (
    DAG_ID,
    IO_RETRIES,
    MONITOR_DAG_ID,
    cron_timetable,
    retrain_asset,
)
from heart_mlops.settings import Settings
from heart_mlops.step_results import Monitored

log = logging.getLogger(__name__)
RETRAIN_REQUEST = retrain_asset()


def window_param(name: str, value: str | None) -> dt.datetime | None:
    """The `since`/`until` param `name` (ISO 8601; without a zone, UTC) as an aware UTC
    datetime, or None. AirflowFailException naming the param and its value when it is not
    ISO 8601."""
    from heart_mlops.predictionlog import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise AirflowFailException(
            f"param {name} = {value!r} is not an ISO 8601 time (e.g. 2026-11-30T18:00:00Z)"
        ) from None


def retrain_request(monitored: Monitored) -> dict[str, str] | None:
    """The asset event's extra for a monitoring result that asks for a retrain, else None."""
    if not monitored.triggered:
        return None
    return {
        "reason": monitored.trigger_reason,
        "report_uri": monitored.report_uri or "",
        "window": f"{monitored.window_start}/{monitored.window_end}",
    }


@task(**IO_RETRIES)
def monitor():
    from heart_mlops import pipeline

    context = get_current_context()
    params = context["params"]
    try:
        monitored = pipeline.monitor(
            Settings(),
            since=window_param("since", params["since"]),
            until=window_param("until", params["until"]),
            now=context["dag_run"].run_after,
        )
    except (RegistryError, StorageError):
        raise  # a store that is down: retried
    except HeartMlopsError as exc:  # a missing reference, an empty window span: retrying won't do
        raise AirflowFailException(f"monitoring cannot run: {exc}") from exc
    log.info(
        "window %s/%s: %d rows; %s; drifted: %s; %s",
        monitored.window_start,
        monitored.window_end,
        monitored.rows,
        monitored.drift_reason,
        ", ".join(monitored.drifted_features) or "none",
        monitored.trigger_reason,
    )
    return monitored.to_xcom()


@task(**IO_RETRIES)
def expire_predictions():
    from heart_mlops import pipeline

    settings = Settings()
    deleted = pipeline.expire_predictions(settings, now=get_current_context()["dag_run"].run_after)
    log.info(
        "deleted %d logged predictions older than %d days",
        deleted,
        settings.prediction_log_retention_days,
    )
    return deleted


@task(outlets=[RETRAIN_REQUEST])
def request_retrain(monitored: dict):
    context = get_current_context()
    extra = retrain_request(Monitored.from_xcom(monitored))
    if extra is None:
        raise AirflowSkipException(f"no retrain request: {monitored['trigger_reason']}")
    context["outlet_events"][RETRAIN_REQUEST].extra = extra
    waiting = context["ti"].get_dr_count(DAG_ID, states=["running", "queued"])
    if waiting:
        log.warning(
            "%s has %d run(s) running or queued: the request waits in the asset queue and "
            "its run starts when they end (max_active_runs=1)",
            DAG_ID,
            waiting,
        )
    log.info("retrain requested (%s): %s", RETRAIN_REQUEST.uri, extra)
    return {"request": extra, "pipeline_runs_ahead": waiting}


@dag(
    dag_id=MONITOR_DAG_ID,
    description="Drift and live performance of the prediction log; asks for a retrain.",
    schedule=cron_timetable(Settings().monitor_schedule),
    catchup=False,
    max_active_runs=1,
    tags=["heart-mlops"],
    params={
        "since": Param(
            None,
            type=["null", "string"],
            description="Window start, ISO 8601 (default: one schedule period before until).",
        ),
        "until": Param(
            None,
            type=["null", "string"],
            description="Window end, ISO 8601 (default: the run's time).",
        ),
    },
    doc_md=__doc__,
)
def model_monitoring():
    monitored = monitor()
    monitored >> expire_predictions() >> request_retrain(monitored)


monitoring_dag = model_monitoring()
