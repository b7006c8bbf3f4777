"""POST /feedback: the confirmed diagnosis of an answered row, joined to its logged prediction.

The outcome is stored on its own (table prediction_outcome, keyed by request_id) and joined to
the prediction's records when the log is read, so an outcome for a row still in a spool is
accepted now and joined once the row reaches the database.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from heart_mlops import predictionlog
from heart_mlops.api import schemas
from heart_mlops.api.body import read_json
from heart_mlops.api.deps import ReloadAuthorized
from heart_mlops.api.errors import ApiError, error_responses

router = APIRouter(tags=["feedback"])
MAX_BODY_BYTES = 4096
_FIELDS = {"request_id", "outcome", "observed_at", "replace"}


def _error(field: str, value, message: str, allowed: str) -> dict:
    return {"field": field, "value": value, "message": message, "allowed": allowed}


def _check_request_id(value) -> list[dict]:
    if isinstance(value, str) and 1 <= len(value) <= 64:
        return []
    return [_error("request_id", value, "is not a request id", "the request_id of an answer")]


def _check_outcome(value) -> list[dict]:
    if type(value) is int and value in (0, 1):
        return []
    return [_error("outcome", value, "is not 0 or 1", "0 (no heart disease), 1 (disease)")]


def _check_observed_at(value) -> tuple[dt.datetime | None, list[dict]]:
    if value is None:
        return dt.datetime.now(dt.UTC), []
    try:
        if not isinstance(value, str):
            raise ValueError
        return predictionlog.parse_time(value), []
    except ValueError:
        allowed = "an ISO 8601 time, e.g. 2026-01-31T14:05:00Z (no zone: UTC)"
        return None, [_error("observed_at", value, "is not an ISO 8601 time", allowed)]


def parse_feedback(body: bytes) -> schemas.Feedback:
    """The JSON body of POST /feedback -> Feedback (observed_at: aware UTC, now when absent).

    Raises ApiError 422 naming each field that is missing, unknown or not allowed."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = _error("body", None, f"is not JSON: {exc}", "a JSON object")
        raise ApiError(422, f"the body is not JSON: {exc}", [error]) from None
    if not isinstance(value, dict):
        message = "is not a JSON object"
        raise ApiError(422, f"body {message}", [_error("body", None, message, "a JSON object")])
    errors = [
        _error(name, value[name], "is not a field of feedback", ", ".join(sorted(_FIELDS)))
        for name in sorted(value.keys() - _FIELDS)
    ]
    errors += [
        _error(name, None, "is required", "see the Feedback schema")
        for name in ("request_id", "outcome")
        if name not in value
    ]
    if "request_id" in value:
        errors += _check_request_id(value["request_id"])
    if "outcome" in value:
        errors += _check_outcome(value["outcome"])
    observed_at, time_errors = _check_observed_at(value.get("observed_at"))
    errors += time_errors
    replace = value.get("replace", False)
    if not isinstance(replace, bool):
        errors.append(_error("replace", replace, "is not a boolean", "true, false"))
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise ApiError(422, summary, errors)
    return schemas.Feedback(
        request_id=value["request_id"],
        outcome=value["outcome"],
        observed_at=observed_at,
        replace=replace,
    )


def _record(prediction_log, feedback: schemas.Feedback) -> tuple[int, str]:
    """Store `feedback` -> (HTTP status, status word). Blocking: run in a thread."""
    request_id = feedback.request_id
    # the spool first: a row leaves it only once it is in the database
    pending = prediction_log.spooled(request_id)
    if not pending and not predictionlog.prediction_exists(prediction_log.engine, request_id):
        message = "was never answered (or its record is past retention)"
        raise ApiError(
            404,
            f"request_id {request_id!r} {message}",
            [_error("request_id", request_id, message, "the request_id of an answer")],
        )
    try:
        replaced = predictionlog.record_outcome(
            prediction_log.engine,
            request_id,
            feedback.outcome,
            feedback.observed_at,
            replace=feedback.replace,
        )
    except predictionlog.OutcomeConflict as exc:
        error = _error("request_id", request_id, "already has an outcome", '"replace": true')
        raise ApiError(409, str(exc), [error]) from None
    if pending:
        return 202, "pending"
    return (200, "replaced") if replaced else (201, "recorded")


@router.post(
    "/feedback",
    response_model=schemas.FeedbackResult,
    status_code=201,
    summary="Record the confirmed diagnosis of an answered row (needs the API token)",
    responses={
        200: {"model": schemas.FeedbackResult, "description": "an earlier outcome replaced"},
        202: {
            "model": schemas.FeedbackResult,
            "description": "recorded; the row is still spooled and is joined when it is written",
        },
        **error_responses(401, 403, 404, 409, 413, 415, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.Feedback.model_json_schema()}},
        }
    },
)
async def feedback(request: Request, _: ReloadAuthorized) -> JSONResponse:
    """
    \f
    `{"request_id", "outcome": 0|1, "observed_at"?: ISO 8601 (default now; no zone = UTC),
    "replace"?: bool}` -> FeedbackResult: 201 recorded, 200 replaced, 202 recorded while the
    row is still spooled.

    Raises ApiError 401/403 (token, as /model/reload), 415/413 (body), 422 (a field missing,
    unknown or not allowed), 404 (an id never answered), 409 (an outcome already recorded and
    not `replace`), 503 (the log is switched off or its database cannot be reached).
    """
    feedback = parse_feedback(await read_json(request, MAX_BODY_BYTES))
    prediction_log = request.app.state.prediction_log
    if not prediction_log.enabled:
        raise ApiError(
            503,
            "the prediction log is switched off (HEART_MLOPS_PREDICTION_LOG_ENABLED=false): "
            "there is no prediction to join an outcome to",
        )
    try:
        status, word = await asyncio.to_thread(_record, prediction_log, feedback)
    except sa.exc.SQLAlchemyError:
        raise ApiError(
            503,
            "the prediction log's database cannot be reached; send the outcome again later",
            headers={"Retry-After": "5"},
        ) from None
    content = {
        "request_id": feedback.request_id,
        "outcome": feedback.outcome,
        "observed_at": feedback.observed_at.isoformat(),
        "status": word,
    }
    return JSONResponse(content, status_code=status)
