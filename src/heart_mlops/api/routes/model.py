"""GET /model/info and POST /model/reload: the served model, and loading the champion now."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from heart_mlops.api import schemas
from heart_mlops.api.deps import HolderDep, ReloadAuthorized, ServingModel
from heart_mlops.api.errors import error_responses

router = APIRouter(prefix="/model", tags=["model"])


@router.get(
    "/info",
    response_model=schemas.ModelInfo,
    responses=error_responses(503),
    summary="The served model: version, type, parameters, metrics, data fingerprint",
)
async def model_info(model: ServingModel, holder: HolderDep) -> dict:
    """
    \f
    The served model's registered name, version, alias, run id, model type, runtime,
    threshold, parameters, CV and holdout metrics, data fingerprint and `loaded_at` (UTC), and
    whether it is still the version under @champion (`alias` null and the reason when not);
    `challenger`: the version under @challenger scored in shadow, null when none.

    Raises ApiError 503 while no model is loaded.
    """
    champion = holder.champion
    serving = champion.serves(model)
    return {
        **model.info,
        "alias": model.info["alias"] if serving else None,
        "serving_champion": serving,
        "champion_version": champion.version,
        "not_champion_reason": None if serving else champion.problem,
        "challenger": _challenger(holder.challenger),
    }


def _challenger(challenger) -> dict | None:
    """What /model/info shows of the version scored in shadow (None: no @challenger)."""
    if challenger is None:
        return None
    keys = ("version", "alias", "run_id", "model_type", "runtime", "threshold", "loaded_at")
    return {key: challenger.info[key] for key in keys}


@router.post(
    "/reload",
    response_model=schemas.ReloadResult,
    summary="Load the current champion now (needs the API token)",
    responses={
        **error_responses(401, 403),
        503: {
            "model": schemas.ReloadResult,
            "description": "loading failed or no champion: the old model keeps serving",
        },
    },
)
async def reload(_: ReloadAuthorized, holder: HolderDep) -> JSONResponse:
    """
    \f
    Load the version under @champion now, even when it is the one served -> ReloadResult,
    200 when a version was loaded, 503 when none was (the old model keeps serving).

    Raises ApiError 403 (no token configured), 401 (missing or wrong token).
    """
    outcome = await holder.refresh(force=True)
    status = 200 if outcome.loaded else 503
    content = {
        "reloaded": outcome.loaded,
        "model_version": outcome.version,
        "previous_version": outcome.previous_version,
        "detail": outcome.detail,
    }
    return JSONResponse(content, status_code=status)
