"""Shared dependencies: the served model (503 while none) and the reload token check."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from heart_mlops.api import deps
from heart_mlops.api.errors import add_error_handlers
from heart_mlops.api.model_holder import LoadedModel, ModelHolder
from heart_mlops.settings import Settings

TOKEN = "unit-test-token"


def app_with(settings: Settings, model: LoadedModel | None = None) -> TestClient:
    """A bare app with the state create_app sets up and one route per dependency."""
    app = FastAPI()
    add_error_handlers(app)
    app.state.settings = settings
    app.state.holder = ModelHolder(settings, current=model)

    @app.get("/model")
    async def served(model: deps.ServingModel, settings: deps.SettingsDep) -> dict:
        return {"version": model.version, "model_name": settings.model_name}

    @app.post("/guarded")
    async def guarded(_: deps.ReloadAuthorized, holder: deps.HolderDep) -> dict:
        return {"holder": holder is app.state.holder}

    return TestClient(app)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, api_token=SecretStr(TOKEN), api_poll_seconds=7.5)


def a_model(version: str = "3") -> LoadedModel:
    return LoadedModel(version, 0.5, runtime=None, info={}, loaded_at="2024-01-01T00:00:00Z")


def test_the_served_model_and_settings_come_from_the_app_state(settings):
    response = app_with(settings, a_model("3")).get("/model")
    assert response.json() == {"version": "3", "model_name": settings.model_name}


def test_no_model_is_503_with_the_reason_and_retry_after(settings):
    response = app_with(settings).get("/model")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json() == {
        "detail": f"no model loaded: no version of '{settings.model_name}' has the alias @champion"
    }


def test_no_model_names_the_last_error_and_retries_after_5s_without_polling(settings):
    client = app_with(settings.model_copy(update={"api_poll_seconds": 0}))
    client.app.state.holder.last_error = "model registry unreachable"
    response = client.get("/model")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["detail"] == "no model loaded: model registry unreachable"


def test_the_right_token_passes(settings):
    response = app_with(settings).post("/guarded", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.json() == {"holder": True}


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"]
)
def test_a_missing_or_wrong_token_is_401(settings, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = app_with(settings).post("/guarded", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "HEART_MLOPS_API_TOKEN" in response.json()["detail"] and TOKEN not in response.text


@pytest.mark.parametrize("token", [None, SecretStr("")])
def test_no_configured_token_disables_reload_with_403(settings, token):
    client = app_with(settings.model_copy(update={"api_token": token}))
    response = client.post("/guarded", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403
    assert "reload is disabled" in response.json()["detail"]


def test_the_token_check_is_documented_as_bearer_security(settings):
    document = app_with(settings).app.openapi()
    assert document["paths"]["/guarded"]["post"]["security"] == [{"HTTPBearer": []}]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
