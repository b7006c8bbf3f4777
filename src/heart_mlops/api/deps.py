"""Dependencies shared by the routes, as `Annotated[..., Depends(...)]` aliases.

`create_app` puts the app's Settings and ModelHolder on `app.state`; the dependencies read them
from there. The prediction routes call `loaded_model` directly instead of depending on
`ServingModel`: they validate the body first (a bad body is a 4xx even while no model is
loaded), and a per-request dependency would cost time on the hot path.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from heart_mlops.api.errors import ApiError
from heart_mlops.api.model_holder import LoadedModel, ModelHolder
from heart_mlops.settings import Settings

BEARER = HTTPBearer(auto_error=False, description="the value of HEART_MLOPS_API_TOKEN")


async def get_settings(request: Request) -> Settings:
    """The app's Settings (`app.state.settings`)."""
    return request.app.state.settings


async def get_holder(request: Request) -> ModelHolder:
    """The app's ModelHolder (`app.state.holder`)."""
    return request.app.state.holder


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]


def loaded_model(holder: ModelHolder) -> LoadedModel:
    """The model `holder` serves now.

    Raises ApiError 503 with the reason (no champion, or the last check's error) and a
    Retry-After of the poll interval in whole seconds (at least 1; 5 when polling is off).
    """
    model = holder.current
    if model is None:
        settings = holder.settings
        reason = holder.last_error or (
            f"no version of '{settings.model_name}' has the alias @champion"
        )
        retry_after = str(max(1, int(settings.api_poll_seconds or 5)))
        raise ApiError(503, f"no model loaded: {reason}", headers={"Retry-After": retry_after})
    return model


async def serving_model(holder: HolderDep) -> LoadedModel:
    """The served model; ApiError 503 while there is none (see `loaded_model`)."""
    return loaded_model(holder)


ServingModel = Annotated[LoadedModel, Depends(serving_model)]


async def check_reload_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> None:
    """Let the request through when it sends `Authorization: Bearer <HEART_MLOPS_API_TOKEN>`
    (compared in constant time).

    Raises ApiError 403 when the server has no token configured (reload disabled), 401 with
    `WWW-Authenticate: Bearer` when the token is missing, of another scheme or wrong.
    """
    expected = settings.api_token.get_secret_value() if settings.api_token else ""
    if not expected:
        raise ApiError(
            403,
            "reload is disabled: set HEART_MLOPS_API_TOKEN on the server to "
            "enable it, then send 'Authorization: Bearer <token>'",
        )
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(
            401,
            "missing or wrong token: send 'Authorization: Bearer <token>' "
            "with the value of HEART_MLOPS_API_TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )


ReloadAuthorized = Annotated[None, Depends(check_reload_token)]
