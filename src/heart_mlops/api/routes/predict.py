"""POST /predict and /predict/batch: P(heart disease) from the served model.

The hot path: the raw body is read, decoded and validated straight into a float64 matrix
(body.py), passed to the runtime inline (one ONNX Runtime call per batch; single rows that
arrive together share one, batching.py), and the answer serialised by orjson: no DataFrame, no
thread hop, no per-request dependency (the app's state is read from the request).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from heart_mlops.api import metrics, schemas
from heart_mlops.api.body import JSON, parse_rows, read_json
from heart_mlops.api.deps import loaded_model
from heart_mlops.api.errors import ApiError, error_responses
from heart_mlops.api.model_holder import LoadedModel
from heart_mlops.api.spool import correlation_id

SHAPE_EXAMPLES = {
    "features": {
        "summary": "13 values in heart.csv order (existing clients)",
        "value": schemas.FEATURES_EXAMPLE,
    },
    "patient": {
        "summary": "named values, null where the record lacks them",
        "value": schemas.PATIENT_EXAMPLE,
    },
}
BATCH_EXAMPLES = {
    "mixed": {
        "summary": "one row of each shape",
        "value": {"instances": [schemas.FEATURES_EXAMPLE, schemas.PATIENT_EXAMPLE]},
    }
}


# documented here, read by `_explain_requested` (no per-request parameter machinery)
EXPLAIN_PARAMETER = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "Add each row's explanation: a base value and the 13 features' "
    "contributions (`explanation`, or null with `explanation_unavailable` saying why).",
}


def _json_body(schema_name: str, examples: dict) -> dict:
    """OpenAPI of a JSON body read by `read_json` and of `explain` (the route declares neither)."""
    content = {"schema": {"$ref": f"#/components/schemas/{schema_name}"}, "examples": examples}
    return {
        "requestBody": {"required": True, "content": {JSON: content}},
        "parameters": [EXPLAIN_PARAMETER],
    }


def _answer(
    model: LoadedModel, probabilities: np.ndarray, ids: list[str]
) -> tuple[list[dict], list[int], list[float]]:
    """One Prediction body per probability (with its request id), in order, counted in the
    metrics; and the decisions and probabilities as lists (for the prediction log)."""
    predictions = (probabilities >= model.threshold).astype(int).tolist()
    p = probabilities.tolist()
    metrics.record_predictions(sum(predictions), len(predictions))
    results = [
        {
            "request_id": request_id,
            "prediction": decision,
            "probability": prob,
            "threshold": model.threshold,
            "model_version": model.version,
            "label": schemas.LABELS[decision],
        }
        for request_id, decision, prob in zip(ids, predictions, p, strict=True)
    ]
    return results, predictions, p


def _record(
    request: Request,
    ids: list[str],
    rows: np.ndarray,
    p: list[float],
    decisions: list[int],
    model: LoadedModel,
    times: tuple[float, float],
) -> None:
    """Spool the answered rows for the prediction log and offer them to shadow scoring.
    `times`: (arrival, epoch seconds; arrival, perf_counter seconds)."""
    received, started = times
    correlation = _client_request_id(request)
    state = request.app.state
    state.prediction_log.append(
        ids, rows, p, decisions, model, role="champion", received=received,
        latency_ms=(time.perf_counter() - started) * 1000, correlation=correlation,
    )  # fmt: skip
    state.shadow.offer(ids, rows, decisions, received, correlation)


def _client_request_id(request: Request) -> str | None:
    """The client's X-Request-ID when it is a sane token (spool.correlation_id), else None."""
    for name, value in request.scope["headers"]:
        if name == b"x-request-id":
            return correlation_id(value.decode("latin-1"))
    return None


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _explain_requested(request: Request) -> bool:
    """The `explain` query parameter (true/false, 1/0, yes/no, on/off; absent: false).

    Raises ApiError 422 for another value."""
    if not request.scope["query_string"]:  # the hot path: no query, nothing parsed
        return False
    value = request.query_params.get("explain")
    if value is None or value.lower() in _FALSE:
        return False
    if value.lower() in _TRUE:
        return True
    message = "is not a boolean"
    error = {"field": "explain", "value": value, "message": message, "allowed": "true, false"}
    raise ApiError(422, f"explain: {value!r} {message}; allowed: true, false", [error])


async def _explained(
    model: LoadedModel, rows: np.ndarray, results: list[dict], p: list[float]
) -> list[dict]:
    """`results` (one Prediction body per row, its P(disease) in `p`) with each row's
    explanation added."""
    explanations = await asyncio.to_thread(model.explainer.explain, rows, p)
    return [result | extra for result, extra in zip(results, explanations, strict=True)]


async def predict(request: Request) -> Response:
    """
    \f
    One patient, `{"features": [13 numbers]}` or `{"patient": {name: number | null}}`, ->
    a Prediction: `request_id` (also in the X-Request-ID header), `prediction` 0/1,
    `probability` P(disease) in [0, 1], `threshold`, `model_version`, `label`; with
    `explain=true`, its Explanation too. The answered row is spooled for the prediction log
    before the answer is sent.

    Raises ApiError 415, 413 (read_json), 422 (parse; `explain` not a boolean), 503 (no model
    loaded).
    """
    started, received = time.perf_counter(), time.time()
    holder = request.app.state.holder  # one lookup in app.state: its settings are the app's
    settings = holder.settings
    explain = _explain_requested(request)
    body = await read_json(request, settings.api_max_body_bytes)
    row = parse_rows(body, batch=False, max_rows=settings.api_max_batch)
    model = loaded_model(holder)
    ids = request.app.state.prediction_log.ids.take(1)
    probability = await model.rows.score(row)
    results, decisions, p = _answer(model, np.array([probability]), ids)
    if explain:
        results = await _explained(model, row, results, p)
    _record(request, ids, row, p, decisions, model, (received, started))
    return Response(orjson.dumps(results[0]), media_type=JSON, headers={"X-Request-ID": ids[0]})


async def predict_batch(request: Request) -> Response:
    """
    \f
    `{"instances": [1 to api_max_batch rows, each in either shape]}` -> `{"predictions":
    [Prediction per row, in order], "model_version", "count"}`; with `explain=true` (at most
    api_explain_max_rows rows), each Prediction with its Explanation. Each row has its own
    `request_id` and is spooled for the prediction log before the answer is sent.

    Raises ApiError 415, 413 (read_json), 422 (parse: any invalid row rejects the batch;
    `explain` not a boolean, or more rows than explanations allow), 503 (no model loaded).
    """
    started, received = time.perf_counter(), time.time()
    holder = request.app.state.holder
    settings, max_rows = holder.settings, holder.settings.api_max_batch
    explain = _explain_requested(request)
    body = await read_json(request, settings.api_max_body_bytes)
    rows = parse_rows(body, batch=True, max_rows=max_rows)
    if explain and len(rows) > settings.api_explain_max_rows:
        limit = settings.api_explain_max_rows
        message = f"explain=true explains at most {limit} rows per batch; {len(rows)} sent"
        error = {"field": "instances", "value": len(rows), "message": message}
        raise ApiError(422, message, [error | {"allowed": f"1 to {limit} rows"}])
    model = loaded_model(holder)
    ids = request.app.state.prediction_log.ids.take(len(rows))
    results, decisions, p = _answer(model, model.runtime(rows), ids)
    if explain:
        results = await _explained(model, rows, results, p)
    _record(request, ids, rows, p, decisions, model, (received, started))
    answer = {"predictions": results, "model_version": model.version, "count": len(results)}
    return Response(orjson.dumps(answer), media_type=JSON)


class RawRequestRoute(APIRoute):
    """A route whose endpoint takes the Request and returns a Response itself: called as it
    is, without FastAPI's per-request parameter solving and response handling, which these
    endpoints do not use (a quarter of the framework's time on a single row). Its OpenAPI
    entry is built as for any route."""

    def get_route_handler(self):
        return self.endpoint


def build_router(max_batch: int) -> APIRouter:
    """The prediction routes; `max_batch` (rows per batch) is quoted in their OpenAPI."""
    router = APIRouter(tags=["predict"], route_class=RawRequestRoute)
    responses = error_responses(413, 415, 422, 503)
    router.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        response_model=schemas.Prediction,
        summary="P(heart disease) for one patient, in either body shape",
        responses=responses,
        openapi_extra=_json_body("PredictRequest", SHAPE_EXAMPLES),
    )
    router.add_api_route(
        "/predict/batch",
        predict_batch,
        methods=["POST"],
        response_model=schemas.BatchPrediction,
        summary=f"Up to {max_batch} rows, each in either shape, in order",
        responses=responses,
        openapi_extra=_json_body("BatchRequest", BATCH_EXAMPLES),
    )
    return router
