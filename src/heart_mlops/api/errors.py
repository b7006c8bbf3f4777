"""Answers other than 2xx: `ApiError`, the handlers that turn errors into JSON, and their
OpenAPI descriptions. Every error body is `{"detail": str, "errors"?: [...]}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from heart_mlops.api import metrics, schemas

log = logging.getLogger(__name__)

_REASONS = {
    401: "missing or wrong token",
    403: "reload disabled",
    404: "unknown request id: never answered",
    409: "an outcome is already recorded",
    413: "body over the size limit",
    415: "not JSON",
    422: "invalid input: the fields, values and what is allowed",
    503: "no model loaded yet, or the registry failed",
}


# the `reason` label of heart_api_refusals_total
_REFUSAL_REASONS = {
    401: "unauthorized",
    403: "forbidden",
    404: "unknown_id",
    409: "conflict",
    413: "too_large",
    415: "not_json",
    422: "invalid_input",
}


class ApiError(Exception):
    """An answer other than 2xx, with a message for the caller."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers


def error_responses(*statuses: int) -> dict:
    """OpenAPI `responses` of a route: each status (one of 401, 403, 413, 415, 422, 503) ->
    its `ErrorResponse` body and reason. Raises KeyError for any other status."""
    return {
        status: {"model": schemas.ErrorResponse, "description": _REASONS[status]}
        for status in statuses
    }


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    if 400 <= exc.status < 500:
        route = getattr(request.scope.get("route"), "path", None) or metrics.UNMATCHED_ROUTE
        reason = _REFUSAL_REASONS.get(exc.status, str(exc.status))
        metrics.REFUSALS.labels(route, reason).inc()
    content = {"detail": exc.detail, **({"errors": exc.errors} if exc.errors else {})}
    return JSONResponse(content, status_code=exc.status, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"detail": "internal error; the server log has the details"}, status_code=500
    )


def add_error_handlers(app: FastAPI) -> None:
    """Answer `ApiError` with its status, headers and `{"detail", "errors"?}`, and any other
    exception with a 500 whose body hides it (the traceback goes to the log)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(Exception, _unexpected_error)
