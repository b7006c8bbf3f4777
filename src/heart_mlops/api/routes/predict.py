"""POST /predict and /predict/batch: P(heart disease) from the served model.

The hot path: the raw body is read, decoded and validated straight into a float64 matrix
(body.py), passed to the runtime (one ONNX Runtime call) inline, and the answer serialised by
orjson: no DataFrame, no thread hop, no per-request dependency (the app's state is read from
the request).
"""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from heart_mlops.api import metrics, schemas
from heart_mlops.api.body import JSON, parse_rows, read_json
from heart_mlops.api.deps import loaded_model
from heart_mlops.api.errors import error_responses
from heart_mlops.api.model_holder import LoadedModel

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


def _json_body(schema_name: str, examples: dict) -> dict:
    """OpenAPI of a JSON body read by `read_json` (the route declares no body parameter)."""
    content = {"schema": {"$ref": f"#/components/schemas/{schema_name}"}, "examples": examples}
    return {"requestBody": {"required": True, "content": {JSON: content}}}


def _answer(model: LoadedModel, probabilities: np.ndarray) -> list[dict]:
    """One Prediction body per probability, in order; counted in the metrics."""
    predictions = (probabilities >= model.threshold).astype(int).tolist()
    metrics.record_predictions(sum(predictions), len(predictions))
    return [
        {
            "prediction": p,
            "probability": prob,
            "threshold": model.threshold,
            "model_version": model.version,
            "label": schemas.LABELS[p],
        }
        for p, prob in zip(predictions, probabilities.tolist(), strict=True)
    ]


async def predict(request: Request) -> Response:
    """
    \f
    One patient, `{"features": [13 numbers]}` or `{"patient": {name: number | null}}`, ->
    a Prediction: `prediction` 0/1, `probability` P(disease) in [0, 1], `threshold`,
    `model_version`, `label`.

    Raises ApiError 415, 413 (read_json), 422 (parse), 503 (no model loaded).
    """
    holder = request.app.state.holder  # one lookup in app.state: its settings are the app's
    settings = holder.settings
    body = await read_json(request, settings.api_max_body_bytes)
    row = parse_rows(body, batch=False, max_rows=settings.api_max_batch)
    model = loaded_model(holder)
    (result,) = _answer(model, model.runtime(row))
    return Response(orjson.dumps(result), media_type=JSON)


async def predict_batch(request: Request) -> Response:
    """
    \f
    `{"instances": [1 to api_max_batch rows, each in either shape]}` -> `{"predictions":
    [Prediction per row, in order], "model_version", "count"}`.

    Raises ApiError 415, 413 (read_json), 422 (parse: any invalid row rejects the batch),
    503 (no model loaded).
    """
    holder = request.app.state.holder
    settings, max_rows = holder.settings, holder.settings.api_max_batch
    body = await read_json(request, settings.api_max_body_bytes)
    rows = parse_rows(body, batch=True, max_rows=max_rows)
    model = loaded_model(holder)
    results = _answer(model, model.runtime(rows))
    answer = {"predictions": results, "model_version": model.version, "count": len(results)}
    return Response(orjson.dumps(answer), media_type=JSON)


def build_router(max_batch: int) -> APIRouter:
    """The prediction routes; `max_batch` (rows per batch) is quoted in their OpenAPI."""
    router = APIRouter(tags=["predict"])
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
