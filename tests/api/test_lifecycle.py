"""Starting without a model, a champion appearing, failed loads keeping the served model."""

from __future__ import annotations

import gc
import time
import weakref

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from heart_mlops import registry
from heart_mlops.api import create_app, model_holder
from heart_mlops.api.model_holder import _REGISTRY_LOCK
from heart_mlops.data import FEATURES
from tests.api.conftest import SEED, TOKEN

pytestmark = pytest.mark.timeout(300)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError("condition not met in time")


def register_champion(settings, model, *, tags: dict) -> str:
    """Log `model` to the store of `settings`, register it, make it champion."""
    example = pd.read_csv("data/heart.csv").loc[:, list(FEATURES)]
    with _REGISTRY_LOCK:  # the app's poller shares MLflow's process-wide URI
        registry.configure(settings)
        with mlflow.start_run():
            uri = registry.log_model(model, example)
        version = registry.register(uri, settings.model_name, tags)
        registry.client().set_registered_model_alias(settings.model_name, "champion", version)
    return version


def register_broken_champion(settings, missing_dir) -> str:
    with _REGISTRY_LOCK:
        registry.configure(settings)
        version = (
            registry.client()
            .create_model_version(settings.model_name, source=missing_dir.as_uri())
            .version
        )
        registry.client().set_registered_model_alias(settings.model_name, "champion", version)
    return str(version)


@pytest.fixture(scope="module")
def champion_pipeline(trained):
    settings = trained["settings"]
    with _REGISTRY_LOCK:
        registry.configure(settings)
        version = registry.version_by_alias(settings.model_name, "champion").version
        return registry.load_version(settings.model_name, version)


def test_empty_registry_then_a_champion_appears_then_a_broken_one(
    fresh_settings, champion_pipeline, tmp_path
):
    settings = fresh_settings.model_copy(
        update={"api_poll_seconds": 0.5, "api_token": SecretStr(TOKEN)}
    )
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: client.get("/health").json()["registry_reachable"] is not None)
        response = client.post("/predict", json={"features": SEED})
        assert response.status_code == 503
        assert "no model loaded" in response.json()["detail"]
        assert "champion" in response.json()["detail"]
        assert client.get("/health/ready").status_code == 503
        assert client.get("/health").json()["model_loaded"] is False
        assert client.post("/model/reload", headers=AUTH).status_code == 503

        # a champion appears: the poller loads it, nobody calls reload
        version = register_champion(settings, champion_pipeline, tags={"threshold": "0.4"})
        wait_for(lambda: client.get("/health/ready").status_code == 200)
        answer = client.post("/predict", json={"features": SEED}).json()
        assert answer["model_version"] == version and answer["threshold"] == 0.4
        assert "heart_api_model_loaded 1.0" in client.get("/metrics").text

        # the next champion's artifacts are gone: the loaded model keeps serving
        broken = register_broken_champion(settings, tmp_path / "gone")
        response = client.post("/model/reload", headers=AUTH)
        assert response.status_code == 503
        body = response.json()
        assert body["reloaded"] is False and body["model_version"] == version
        assert f"loading version {broken} failed" in body["detail"]
        assert f"still serving version {version}" in body["detail"]
        wait_for(lambda: client.get("/health").json()["last_error"] is not None)
        assert client.post("/predict", json={"features": SEED}).json()["model_version"] == version
        assert client.get("/health/ready").status_code == 200


def test_a_served_model_is_in_the_metrics_from_its_first_ready_answer(
    fresh_settings, champion_pipeline, monkeypatch
):
    """/health/ready and /metrics never disagree, however long the heap takes to settle after
    a load (a full collection, slow on a loaded machine, runs right after a model is served)."""
    settle = model_holder.settle_heap
    monkeypatch.setattr(model_holder, "settle_heap", lambda: (time.sleep(1.5), settle()))
    settings = fresh_settings.model_copy(update={"api_poll_seconds": 0.2})
    with TestClient(create_app(settings)) as client:
        version = register_champion(settings, champion_pipeline, tags={})
        deadline = time.monotonic() + 60
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the champion was never served"
        exposition = client.get("/metrics").text
        assert "heart_api_model_loaded 1.0" in exposition
        assert f"heart_api_model_version {float(version)}" in exposition


def test_the_served_model_is_out_of_the_collectors_view_and_a_replaced_one_is_freed(
    fresh_settings, champion_pipeline
):
    """A full collection would walk the whole heap (a pause of ~250 ms): the served model and
    the imports are frozen at load; the model a new champion replaces is released."""
    settings = fresh_settings.model_copy(update={"api_poll_seconds": 0.5})
    with TestClient(create_app(settings)) as client:
        holder = client.app.state.holder
        first = register_champion(settings, champion_pipeline, tags={})
        wait_for(lambda: holder.current is not None and holder.current.version == first)
        served = weakref.ref(holder.current.runtime)
        # frozen right after it is published
        wait_for(lambda: id(served()) not in {id(o) for o in gc.get_objects()}, timeout=30)
        assert gc.get_freeze_count() > len(gc.get_objects())

        second = register_champion(settings, champion_pipeline, tags={})
        wait_for(lambda: holder.current.version == second)
        assert served() is None
        assert client.post("/predict", json={"features": SEED}).json()["model_version"] == second


def test_unreachable_registry_serves_503_and_reports_it(fresh_settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings = fresh_settings.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{blocker}/mlflow.db", "api_poll_seconds": 0}
    )
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: client.get("/health").json()["registry_reachable"] is False)
        health = client.get("/health").json()
        assert health["model_loaded"] is False and "unreachable" in health["last_error"]
        response = client.post("/predict", json={"features": SEED})
        assert response.status_code == 503 and "unreachable" in response.json()["detail"]


def test_messages_never_show_credentials_of_the_store():
    import secrets

    from heart_mlops.api.model_holder import redact

    password = secrets.token_hex(8)  # made here: no credential in the repository
    message = f"could not connect to postgresql://mlflow:{password}@db:5432/mlflow"
    assert password not in redact(message) and "db:5432" in redact(message)


FIRST, NEW = {"threshold": "0.45"}, {"threshold": "0.35"}  # tell the two champions apart


def lose_the_alias(settings, how: str, served: str, missing_dir) -> str | None:
    """Take @champion away from the served version `how`; -> the version under it afterwards."""
    name = settings.model_name
    if how == "moved to a version that fails to load":
        return register_broken_champion(settings, missing_dir)
    with _REGISTRY_LOCK:
        registry.configure(settings)
        client = registry.client()
        if how == "version deleted":
            client.delete_model_version(name, served)  # MLflow drops its aliases with it
        elif how == "alias removed":
            client.delete_registered_model_alias(name, "champion")
        else:
            client.delete_registered_model(name)
    return None


def stated(health: dict, *, serving: bool) -> bool:
    """Whether /health says the served model is (or is not, with the error) the champion."""
    return health["serving_champion"] is serving and (health["last_error"] is None) is serving


def assert_serves_the_champion(client, version: str) -> None:
    """/health, /model/info and /metrics agree that `version` serves and holds @champion."""
    health = client.get("/health").json()
    assert health["model_version"] == version and health["last_error"] is None
    assert health["serving_champion"] is True and health["champion_version"] == version
    info = client.get("/model/info").json()
    assert info["version"] == version and info["alias"] == "champion"
    assert info["serving_champion"] is True and info["not_champion_reason"] is None
    assert "heart_api_serving_champion 1.0" in client.get("/metrics").text


@pytest.mark.parametrize(
    "how",
    [
        "version deleted",
        "alias removed",
        "registered model deleted",
        "moved to a version that fails to load",
    ],
)
def test_a_served_model_that_loses_champion_keeps_serving_and_says_so(
    fresh_settings, champion_pipeline, tmp_path, how
):
    settings = fresh_settings.model_copy(
        update={"api_poll_seconds": 0.5, "api_token": SecretStr(TOKEN)}
    )
    with TestClient(create_app(settings)) as client:
        served = register_champion(settings, champion_pipeline, tags=FIRST)
        wait_for(lambda: stated(client.get("/health").json(), serving=True))
        assert_serves_the_champion(client, served)

        now_champion = lose_the_alias(settings, how, served, tmp_path / "gone")
        wait_for(lambda: stated(client.get("/health").json(), serving=False))
        why = (
            f"loading version {now_champion} failed"
            if now_champion
            else f"@champion of '{settings.model_name}' no longer resolves"
        )
        health = client.get("/health").json()
        assert health["model_loaded"] is True and health["model_version"] == served
        assert health["champion_version"] == now_champion and health["registry_reachable"]
        assert why in health["last_error"]
        assert f"still serving version {served}" in health["last_error"]
        assert client.get("/health/ready").status_code == 200
        assert client.post("/predict", json={"features": SEED}).json()["model_version"] == served
        info = client.get("/model/info").json()
        assert info["version"] == served and info["alias"] is None
        assert info["serving_champion"] is False and info["champion_version"] == now_champion
        assert why in info["not_champion_reason"]
        exposition = client.get("/metrics").text
        assert "heart_api_serving_champion 0.0" in exposition
        assert "heart_api_model_loaded 1.0" in exposition
        reload = client.post("/model/reload", headers=AUTH)
        assert reload.status_code == 503
        body = reload.json()
        assert body["reloaded"] is False and body["model_version"] == served
        assert why in body["detail"] and "yet" not in body["detail"]

        # the alias comes back: on the served version (nothing to load) or on a new champion
        if how == "alias removed":
            with _REGISTRY_LOCK:
                registry.configure(settings)
                registry.client().set_registered_model_alias(
                    settings.model_name, "champion", served
                )
            back, threshold = served, 0.45
        else:
            back, threshold = register_champion(settings, champion_pipeline, tags=NEW), 0.35
        if how == "registered model deleted":
            assert back == served  # the model made again numbers from 1: still a new version
        wait_for(lambda: stated(client.get("/health").json(), serving=True))
        assert_serves_the_champion(client, back)
        assert client.post("/predict", json={"features": SEED}).json()["threshold"] == threshold
