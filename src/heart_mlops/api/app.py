"""The serving API: `create_app(settings)` -> FastAPI app, served by `heart-mlops serve`.

The prediction endpoints read the raw body and validate it in one pass (schemas.py), build a
numpy row and call the compiled runtime inline: no DataFrame, no thread hop on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError

from heart_mlops import __version__
from heart_mlops.api import metrics, schemas
from heart_mlops.api.model_holder import ModelHolder, settle_heap
from heart_mlops.settings import Settings

log = logging.getLogger(__name__)
JSON = "application/json"


class ApiError(Exception):
    """An answer other than 2xx, with a message for the caller."""

    def __init__(self, status: int, detail: str, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers


def _error_responses(*statuses: int) -> dict:
    reasons = {401: "missing or wrong token", 403: "reload disabled",
               413: "body over the size limit", 415: "not JSON",
               422: "invalid input: the fields, values and what is allowed",
               503: "no model loaded yet, or the registry failed"}
    return {status: {"model": schemas.ErrorResponse, "description": reasons[status]}
            for status in statuses}


def _json_body(schema_name: str, examples: dict) -> dict:
    return {"requestBody": {"required": True, "content": {JSON: {
        "schema": {"$ref": f"#/components/schemas/{schema_name}"}, "examples": examples}}}}


BEARER = HTTPBearer(auto_error=False, description="the value of HEART_MLOPS_API_TOKEN")
SHAPE_EXAMPLES = {
    "features": {"summary": "13 values in heart.csv order (existing clients)",
                 "value": schemas.FEATURES_EXAMPLE},
    "patient": {"summary": "named values, null where the record lacks them",
                "value": schemas.PATIENT_EXAMPLE},
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    holder = ModelHolder(settings)
    batch_model = schemas.batch_request_model(settings.api_max_batch)
    max_body = settings.api_max_body_bytes

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        metrics.record_model(None)
        settle_heap()
        poller = asyncio.create_task(holder.poll_forever(), name="champion-poller")
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            metrics.worker_exiting()

    app = FastAPI(
        title="heart-mlops API", version=__version__, lifespan=lifespan,
        description="P(heart disease) from 13 clinical features, served from the registered "
                    f"champion of '{settings.model_name}'.")
    app.state.holder = holder
    app.add_middleware(metrics.RequestMetrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        content = {"detail": exc.detail, **({"errors": exc.errors} if exc.errors else {})}
        return JSONResponse(content, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"},
                            status_code=500)

    async def read_json(request: Request) -> bytes:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != JSON and not media.endswith("+json"):
            raise ApiError(415, f"Content-Type must be {JSON}, got '{media or 'none'}'")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body:
            raise ApiError(413, f"the body has {declared} bytes; at most {max_body} allowed "
                                "(HEART_MLOPS_API_MAX_BODY_BYTES)")
        body, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise ApiError(413, f"the body exceeds {max_body} bytes "
                                    "(HEART_MLOPS_API_MAX_BODY_BYTES)")
            body.append(chunk)
        return b"".join(body)

    def parse(adapter, body: bytes):
        try:
            return adapter.validate_json(body)
        except ValidationError as exc:
            errors = schemas.describe_errors(exc, max_rows=settings.api_max_batch)
            raise ApiError(422, schemas.summary(errors), errors) from None

    def serving_model():
        model = holder.current
        if model is None:
            reason = holder.last_error or (
                f"no version of '{settings.model_name}' has the alias @champion yet")
            raise ApiError(503, f"no model loaded: {reason}", headers={"Retry-After": str(
                max(1, int(settings.api_poll_seconds or 5)))})
        return model

    def answer(model, probabilities: np.ndarray) -> list[dict]:
        predictions = (probabilities >= model.threshold).astype(int).tolist()
        metrics.record_predictions(sum(predictions), len(predictions))
        return [{"prediction": p, "probability": prob, "threshold": model.threshold,
                 "model_version": model.version, "label": schemas.LABELS[p]}
                for p, prob in zip(predictions, probabilities.tolist(), strict=True)]

    predict_request = schemas.PREDICT_REQUEST
    batch_request = TypeAdapter(batch_model)

    @app.post("/predict", response_model=schemas.Prediction, tags=["predict"],
              summary="P(heart disease) for one patient, in either body shape",
              responses=_error_responses(413, 415, 422, 503),
              openapi_extra=_json_body("PredictRequest", SHAPE_EXAMPLES))
    async def predict(request: Request) -> Response:
        item = parse(predict_request, await read_json(request))
        model = serving_model()
        row = np.array([schemas.feature_row(item)], dtype=float)
        (result,) = answer(model, model.runtime(row))
        return Response(json.dumps(result), media_type=JSON)

    @app.post("/predict/batch", response_model=schemas.BatchPrediction, tags=["predict"],
              summary=f"Up to {settings.api_max_batch} rows, each in either shape, in order",
              responses=_error_responses(413, 415, 422, 503),
              openapi_extra=_json_body("BatchRequest", {"mixed": {
                  "summary": "one row of each shape",
                  "value": {"instances": [schemas.FEATURES_EXAMPLE, schemas.PATIENT_EXAMPLE]}}}))
    async def predict_batch(request: Request) -> Response:
        batch = parse(batch_request, await read_json(request))
        model = serving_model()
        results = answer(model, model.runtime(schemas.feature_matrix(batch.instances)))
        return Response(json.dumps({"predictions": results, "model_version": model.version,
                                    "count": len(results)}), media_type=JSON)

    @app.get("/", tags=["service"], summary="What this service is")
    async def root() -> dict:
        return {"name": "heart-mlops API", "version": __version__,
                "model_name": settings.model_name, "docs": "/docs", "openapi": "/openapi.json",
                "health": "/health", "metrics": "/metrics"}

    @app.get("/health", response_model=schemas.Health, tags=["service"],
             summary="Liveness: 200 while the process serves")
    async def health() -> dict:
        model = holder.current
        return {"status": "ok", "model_loaded": model is not None,
                "model_version": model.version if model else None,
                "registry_reachable": holder.registry_reachable,
                "registry_checked_at": holder.registry_checked_at,
                "last_error": holder.last_error}

    @app.get("/health/ready", tags=["service"], responses=_error_responses(503),
             summary="Readiness: 200 once a model is loaded, 503 before")
    async def ready() -> dict:
        model = serving_model()
        return {"ready": True, "model_version": model.version}

    @app.get("/model/info", tags=["model"], responses=_error_responses(503),
             summary="The served model: version, type, parameters, metrics, data fingerprint")
    async def model_info() -> dict:
        return serving_model().info

    @app.post("/model/reload", response_model=schemas.ReloadResult, tags=["model"],
              summary="Load the current champion now (needs the API token)",
              responses={**_error_responses(401, 403), 503: {
                  "model": schemas.ReloadResult,
                  "description": "loading failed or no champion: the old model keeps serving"}})
    async def reload(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                            Depends(BEARER)]) -> JSONResponse:
        expected = settings.api_token.get_secret_value() if settings.api_token else ""
        if not expected:
            raise ApiError(403, "reload is disabled: set HEART_MLOPS_API_TOKEN on the server to "
                                "enable it, then send 'Authorization: Bearer <token>'")
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>' "
                                "with the value of HEART_MLOPS_API_TOKEN",
                           headers={"WWW-Authenticate": "Bearer"})
        outcome = await holder.refresh(force=True)
        status = 200 if outcome.loaded else 503
        return JSONResponse({"reloaded": outcome.loaded, "model_version": outcome.version,
                             "previous_version": outcome.previous_version,
                             "detail": outcome.detail}, status_code=status)

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics",
             response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version,
                                   description=app.description, routes=app.routes)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for name, adapter in (("PredictRequest", predict_request),
                                  ("BatchRequest", batch_request)):
                schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[name] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi
    return app
