"""The serving API: `create_app(settings)` -> FastAPI app, served by `heart-mlops serve`.

The prediction endpoints read the raw body and validate it in one pass (schemas.py), build a
numpy row and call the compiled runtime inline: no DataFrame, no thread hop on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response

from heart_mlops import __version__
from heart_mlops.api import metrics, schemas
from heart_mlops.api.body import JSON, parse, read_json
from heart_mlops.api.deps import HolderDep, ReloadAuthorized, ServingModel, loaded_model
from heart_mlops.api.errors import add_error_handlers, error_responses
from heart_mlops.api.model_holder import ModelHolder, settle_heap
from heart_mlops.settings import Settings


def _json_body(schema_name: str, examples: dict) -> dict:
    return {"requestBody": {"required": True, "content": {JSON: {
        "schema": {"$ref": f"#/components/schemas/{schema_name}"}, "examples": examples}}}}


SHAPE_EXAMPLES = {
    "features": {"summary": "13 values in heart.csv order (existing clients)",
                 "value": schemas.FEATURES_EXAMPLE},
    "patient": {"summary": "named values, null where the record lacks them",
                "value": schemas.PATIENT_EXAMPLE},
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    holder = ModelHolder(settings)
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
    app.state.settings = settings
    app.state.holder = holder
    app.add_middleware(metrics.RequestMetrics)
    add_error_handlers(app)

    def answer(model, probabilities: np.ndarray) -> list[dict]:
        predictions = (probabilities >= model.threshold).astype(int).tolist()
        metrics.record_predictions(sum(predictions), len(predictions))
        return [{"prediction": p, "probability": prob, "threshold": model.threshold,
                 "model_version": model.version, "label": schemas.LABELS[p]}
                for p, prob in zip(predictions, probabilities.tolist(), strict=True)]

    predict_request = schemas.PREDICT_REQUEST
    batch_request = schemas.batch_request(settings.api_max_batch)
    max_rows = settings.api_max_batch

    @app.post("/predict", response_model=schemas.Prediction, tags=["predict"],
              summary="P(heart disease) for one patient, in either body shape",
              responses=error_responses(413, 415, 422, 503),
              openapi_extra=_json_body("PredictRequest", SHAPE_EXAMPLES))
    async def predict(request: Request) -> Response:
        item = parse(predict_request, await read_json(request, max_body), max_rows=max_rows)
        model = loaded_model(holder)
        row = np.array([schemas.feature_row(item)], dtype=float)
        (result,) = answer(model, model.runtime(row))
        return Response(json.dumps(result), media_type=JSON)

    @app.post("/predict/batch", response_model=schemas.BatchPrediction, tags=["predict"],
              summary=f"Up to {settings.api_max_batch} rows, each in either shape, in order",
              responses=error_responses(413, 415, 422, 503),
              openapi_extra=_json_body("BatchRequest", {"mixed": {
                  "summary": "one row of each shape",
                  "value": {"instances": [schemas.FEATURES_EXAMPLE, schemas.PATIENT_EXAMPLE]}}}))
    async def predict_batch(request: Request) -> Response:
        batch = parse(batch_request, await read_json(request, max_body), max_rows=max_rows)
        model = loaded_model(holder)
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

    @app.get("/health/ready", tags=["service"], responses=error_responses(503),
             summary="Readiness: 200 once a model is loaded, 503 before")
    async def ready(model: ServingModel) -> dict:
        return {"ready": True, "model_version": model.version}

    @app.get("/model/info", tags=["model"], responses=error_responses(503),
             summary="The served model: version, type, parameters, metrics, data fingerprint")
    async def model_info(model: ServingModel) -> dict:
        return model.info

    @app.post("/model/reload", response_model=schemas.ReloadResult, tags=["model"],
              summary="Load the current champion now (needs the API token)",
              responses={**error_responses(401, 403), 503: {
                  "model": schemas.ReloadResult,
                  "description": "loading failed or no champion: the old model keeps serving"}})
    async def reload(_: ReloadAuthorized, holder: HolderDep) -> JSONResponse:
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
