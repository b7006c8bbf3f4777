"""GET /, /health, /health/ready and /metrics: what the service is and how it is doing."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from heart_mlops import __version__
from heart_mlops.api import metrics, schemas
from heart_mlops.api.deps import HolderDep, ServingModel, SettingsDep
from heart_mlops.api.errors import error_responses

router = APIRouter(tags=["service"])


@router.get("/", summary="What this service is")
async def root(settings: SettingsDep) -> dict:
    """
    \f
    The service's name and version, the served model's registered name and the paths of the
    docs, OpenAPI document, health, metrics, feature table and clinician page.
    """
    return {
        "name": "heart-mlops API",
        "version": __version__,
        "model_name": settings.model_name,
        "docs": "/docs",
        "openapi": "/openapi.json",
        "health": "/health",
        "metrics": "/metrics",
        "features": "/features",
        "ui": "/ui",
    }


@router.get(
    "/health",
    response_model=schemas.Health,
    summary="Liveness: 200 while the process serves",
)
async def health(holder: HolderDep) -> dict:
    """
    \f
    Always 200: whether a model is loaded and its version, whether the registry answered at
    its last check (null before the first) and when (UTC), what went wrong at that check, the
    version under @champion and whether the served model is that version.
    """
    model, champion = holder.current, holder.champion
    return {
        "status": "ok",
        "model_loaded": model is not None,
        "model_version": model.version if model else None,
        "registry_reachable": holder.registry_reachable,
        "registry_checked_at": holder.registry_checked_at,
        "last_error": holder.last_error,
        "champion_version": champion.version,
        "serving_champion": champion.serves(model),
    }


@router.get(
    "/health/ready",
    responses=error_responses(503),
    summary="Readiness: 200 once a model is loaded, 503 before",
)
async def ready(model: ServingModel) -> dict:
    """
    \f
    `{"ready": true, "model_version"}` once a model is loaded.

    Raises ApiError 503 before.
    """
    return {"ready": True, "model_version": model.version}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics() -> Response:
    """
    \f
    The Prometheus text exposition of this worker, or summed over every worker when
    PROMETHEUS_MULTIPROC_DIR is set.
    """
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
