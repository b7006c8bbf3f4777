"""Prometheus metrics of the API (names are queried by the Grafana dashboard: keep them).

With several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR (`heart-mlops serve` does when
--workers > 1): every worker writes its values there and /metrics sums them across workers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
UNMATCHED_ROUTE = "<unmatched>"  # one label for every unknown path, so the series stay few

REQUESTS = Counter(
    "heart_api_requests_total",
    "HTTP requests by method, route and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "heart_api_request_duration_seconds",
    "Request duration by route.",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# single-row requests scored in one call of the model (api/batching.py): 1 without concurrency
ROW_BATCH = Histogram(
    "heart_api_row_batch_size",
    "Single-row requests scored together in one call of the model.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
PREDICTIONS = Counter(
    "heart_api_predictions_total", "Predictions by class (1 = disease).", ["prediction"]
)
# across workers: loaded only if every live worker has a model; version the highest served
MODEL_LOADED = Gauge(
    "heart_api_model_loaded", "1 when a model is loaded and serving.", multiprocess_mode="livemin"
)
MODEL_VERSION = Gauge(
    "heart_api_model_version",
    "Registered version of the served model.",
    multiprocess_mode="livemax",
)
# 0 while the served model is not the version under @champion (alias removed or moved to a
# version that failed to load, version or registered model deleted) or none is loaded; across
# workers 1 only if every live worker serves the champion
SERVING_CHAMPION = Gauge(
    "heart_api_serving_champion",
    "1 when the served model is the version under @champion at the last registry check.",
    multiprocess_mode="livemin",
)

# the prediction log (api/spool.py): rows written to its database, replayed from the spools of
# dead workers, failed database writes; rows answered and not yet written (summed over workers)
PREDICTION_LOG_WRITTEN = Counter(
    "heart_api_prediction_log_written_total", "Prediction-log rows written to the database."
)
PREDICTION_LOG_REPLAYED = Counter(
    "heart_api_prediction_log_replayed_total",
    "Prediction-log rows written from the spools of dead workers.",
)
PREDICTION_LOG_WRITE_ERRORS = Counter(
    "heart_api_prediction_log_write_errors_total",
    "Failed writes of the prediction log to its database (the spool keeps the rows).",
)
PREDICTION_LOG_SPOOLED = Gauge(
    "heart_api_prediction_log_spooled",
    "Prediction-log rows spooled and not yet written to the database.",
    multiprocess_mode="livesum",
)
# shadow scoring by @challenger (api/shadow.py), in rows
SHADOW_SCORED = Counter("heart_api_shadow_scored_total", "Rows scored in shadow by @challenger.")
SHADOW_SKIPPED = Counter(
    "heart_api_shadow_skipped_total",
    "Answered rows not scored in shadow (its queue full, or the challenger failed or gone).",
)
SHADOW_DISAGREEMENTS = Counter(
    "heart_api_shadow_disagreements_total",
    "Rows where @challenger's decision (at its threshold) differs from the champion's.",
)
REFUSALS = Counter(
    "heart_api_refusals_total", "Requests refused (4xx) by route and reason.", ["route", "reason"]
)


def record_model(version: str | None) -> None:
    """Set the model gauges: loaded 0 for None, else 1 and the version when it is a number."""
    MODEL_LOADED.set(0 if version is None else 1)
    if version is not None and version.isdigit():
        MODEL_VERSION.set(int(version))


def record_serving_champion(serving: bool) -> None:
    """Set the champion gauge: 1 when the served model is the version under @champion."""
    SERVING_CHAMPION.set(1 if serving else 0)


_PREDICTED = {"1": PREDICTIONS.labels("1"), "0": PREDICTIONS.labels("0")}  # .labels() is costly


def record_predictions(positives: int, total: int) -> None:
    """Count `total` predictions, `positives` of them 1 (disease)."""
    if positives:
        _PREDICTED["1"].inc(positives)
    if total - positives:
        _PREDICTED["0"].inc(total - positives)


def exposition() -> tuple[bytes, str]:
    """(Prometheus text of every metric, its Content-Type); summed over the workers'
    files when PROMETHEUS_MULTIPROC_DIR is set."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def worker_exiting() -> None:
    """Drop this worker's live gauges from the shared directory."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())


def prepare_multiprocess_dir(default: Path) -> Path:
    """Before starting several workers: a shared directory for their metrics, emptied of the
    files a previous run left (they would be added to this run's counts)."""
    directory = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(default)))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        if stale.name.startswith(("counter_", "gauge_", "histogram_", "summary_")):
            stale.unlink()
    return directory


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request under its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._latency: dict[tuple[str, str], object] = {}
        self._requests: dict[tuple[str, str, str], object] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            self._observe(scope["method"], template, str(status), time.perf_counter() - started)

    def _observe(self, method: str, route: str, status: str, seconds: float) -> None:
        # labelled children are cached: .labels() is the costly part of a metric update
        latency = self._latency.get((method, route))
        if latency is None:
            latency = self._latency[(method, route)] = LATENCY.labels(method, route)
        latency.observe(seconds)
        requests = self._requests.get((method, route, status))
        if requests is None:
            requests = self._requests[(method, route, status)] = REQUESTS.labels(
                method, route, status
            )
        requests.inc()
