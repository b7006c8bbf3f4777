"""Fixtures of the API tests: apps on the session's trained store, a live uvicorn server."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import mlflow
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr

from heart_mlops import registry
from heart_mlops.api import create_app
from heart_mlops.api.model_holder import _REGISTRY_LOCK
from heart_mlops.settings import Settings
from tests.conftest import fast_settings
from tests.support import free_port

TOKEN = "test-reload-token"
SEED = [63, 1, 3, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1]


def wait_until_ready(client, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.1)
    raise TimeoutError(f"no model loaded after {timeout:.0f}s: {client.get('/health').json()}")


@pytest.fixture(scope="session")
def api_settings(trained):
    return trained["settings"].model_copy(
        update={"api_token": SecretStr(TOKEN), "api_poll_seconds": 2.0}
    )


@pytest.fixture(scope="module")
def client(api_settings):
    with TestClient(create_app(api_settings), raise_server_exceptions=False) as test_client:
        wait_until_ready(test_client)
        yield test_client


@contextlib.contextmanager
def serving(settings, *, ready: bool = True) -> Iterator[str]:
    """The API of `settings` served by uvicorn on a loopback port, in a thread of this process:
    its base URL, once a model is loaded (`ready`) or at once."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    url = f"http://127.0.0.1:{port}"
    try:
        if ready:
            import httpx

            with httpx.Client(base_url=url, timeout=30) as http:
                wait_until_ready(http)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def live_url(api_settings):
    """The API served by uvicorn on a loopback port, in a thread of this process."""
    with serving(api_settings) as url:
        yield url


@pytest.fixture(scope="module")
def own_store(tmp_path_factory) -> Settings:
    settings = fast_settings(tmp_path_factory.mktemp("runtime-home"))
    with _REGISTRY_LOCK:  # API pollers of other fixtures share MLflow's process-wide URI
        registry.configure(settings)
    return settings


def register_champion(
    settings: Settings, pipeline, name: str, heart_rows, reference: pd.DataFrame | None = None
) -> Settings:
    """`pipeline` logged (with its training rows `reference`, if given), registered as the only
    version of model `name`, and @champion."""
    settings = settings.model_copy(update={"model_name": name, "api_poll_seconds": 0.0})
    with _REGISTRY_LOCK:
        registry.configure(settings)
        with mlflow.start_run(run_name=name):
            uri = registry.log_model(pipeline, heart_rows.assign(target=0), reference=reference)
        version = registry.register(uri, name, {"threshold": 0.5})
        registry.promote(name, version, "test")
    return settings
