"""Service endpoints: root, health, model info, reload with its token, Prometheus metrics."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from heart_mlops.api import create_app
from tests.api.conftest import SEED, TOKEN, wait_until_ready

pytestmark = pytest.mark.timeout(300)


def test_root_links_to_the_docs(client):
    body = client.get("/").json()
    assert body["name"] and body["version"] and body["docs"] == "/docs"
    assert client.get("/docs").status_code == 200


def test_health_and_readiness(client, api_settings):
    health = client.get("/health").json()
    assert health["model_loaded"] is True and health["registry_reachable"] is True
    assert health["model_version"]
    assert client.get("/health/ready").json() == {
        "ready": True,
        "model_version": health["model_version"],
    }


def test_model_info(client, trained):
    info = client.get("/model/info").json()
    registered = trained["result"].registered
    assert info["model_name"] == registered.model_name
    assert info["version"] == str(registered.version) and info["alias"] == "champion"
    assert info["run_id"] and info["model_type"] and info["parameters"]
    assert info["metrics"]["cv"]["cv_roc_auc_mean"] > 0.5
    assert "holdout_roc_auc" in info["metrics"]["holdout"]
    assert len(info["data"]["sha256"]) == 64 and info["loaded_at"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ],
)
def test_reload_refuses_a_missing_or_wrong_token(client, headers):
    response = client.post("/model/reload", headers=headers)
    assert response.status_code == 401
    assert "HEART_MLOPS_API_TOKEN" in response.json()["detail"]
    assert TOKEN not in response.text


def test_reload_with_the_token_loads_the_champion(client):
    response = client.post("/model/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reloaded"] is True and body["model_version"] == body["previous_version"]
    assert client.post("/predict", json={"features": SEED}).status_code == 200


def test_reload_is_disabled_without_a_configured_token(api_settings):
    settings = api_settings.model_copy(update={"api_token": None, "api_poll_seconds": 0})
    with TestClient(create_app(settings)) as disabled:
        response = disabled.post("/model/reload", headers={"Authorization": "Bearer anything"})
        assert response.status_code == 403
        assert "HEART_MLOPS_API_TOKEN" in response.json()["detail"]


def test_metrics_use_the_dashboard_names_and_route_templates(client):
    client.post("/predict", json={"features": SEED})
    client.post("/predict", json={"features": [1]})
    client.get("/no/such/path/12345")
    text = client.get("/metrics").text
    version = client.get("/health").json()["model_version"]
    assert 'heart_api_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'heart_api_requests_total{method="POST",route="/predict",status="422"}' in text
    assert 'route="<unmatched>",status="404"' in text and "12345" not in text
    assert (
        'heart_api_request_duration_seconds_bucket{le="0.005",method="POST",route="/predict"}'
        in text
    )
    assert "heart_api_predictions_total{prediction=" in text
    assert "heart_api_model_loaded 1.0" in text
    assert f"heart_api_model_version {float(version)}" in text


def test_openapi_has_an_example_for_each_body_shape(client):
    document = client.get("/openapi.json").json()
    content = document["paths"]["/predict"]["post"]["requestBody"]["content"]
    examples = content["application/json"]["examples"]
    assert set(examples) == {"features", "patient"}
    assert examples["features"]["value"] == {"features": SEED}
    batch = document["paths"]["/predict/batch"]["post"]["requestBody"]["content"]
    assert batch["application/json"]["examples"]


def test_a_second_app_on_the_same_store_serves_the_same_version(api_settings, client):
    settings = api_settings.model_copy(update={"api_poll_seconds": 0})
    with TestClient(create_app(settings)) as other:
        wait_until_ready(other)
        assert (
            other.get("/health").json()["model_version"]
            == client.get("/health").json()["model_version"]
        )
