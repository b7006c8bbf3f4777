"""Outages of the S3 server and of the MLflow server, with real servers stopped and restarted.

A step that meets a stopped service fails with a message naming the endpoint and writes nothing;
once the service is back, a rerun of the same step (what an Airflow retry does) succeeds.
"""

from __future__ import annotations

import secrets
import subprocess

import pytest

from heart_mlops import registry, storage
from heart_mlops.devstack.services import mlflow_server_command
from heart_mlops.errors import RegistryError, StorageError
from heart_mlops.pipeline import extract_data, preprocess_data, register_model, run_pipeline
from heart_mlops.settings import PROJECT_ROOT
from tests.conftest import fast_settings
from tests.support import free_port, rclone_s3_command, use_s3, wait_for_port

pytestmark = pytest.mark.outage
HEART_CSV = str(PROJECT_ROOT / "data" / "heart.csv")


class Service:
    """A server process that can be stopped and started again on the same port and store."""

    def __init__(self, command: list[str], port: int, log_path, startup_timeout: float = 30):
        self.command, self.port, self.log_path = command, port, log_path
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(self.port, self.startup_timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def files_under(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def s3_service(tmp_path, monkeypatch):
    root, port = tmp_path / "s3", free_port()
    (root / "data").mkdir(parents=True)
    access_key, secret_key = secrets.token_hex(8), secrets.token_hex(16)
    service = Service(
        rclone_s3_command(root, port, access_key, secret_key), port, tmp_path / "s3.log"
    )
    service.root, service.endpoint = root, f"http://127.0.0.1:{port}"
    use_s3(monkeypatch, service.endpoint, access_key, secret_key)
    service.start()
    yield service
    service.stop()
    storage._client.cache_clear()


def test_s3_outage_fails_the_step_naming_the_endpoint_and_a_rerun_succeeds(s3_service, tmp_path):
    settings = fast_settings(tmp_path / "home", artifact_store_uri="s3://data/pipeline")
    extracted = extract_data(settings, run_key="s3-outage", data_uri=HEART_CSV)
    stored = files_under(s3_service.root)
    assert any(name.endswith("raw/data.csv") for name in stored)

    s3_service.stop()
    with pytest.raises(StorageError, match=s3_service.endpoint):
        preprocess_data(settings, extracted)
    assert files_under(s3_service.root) == stored  # nothing written, nothing half-written

    s3_service.start()
    prepared = preprocess_data(settings, extracted)
    train, holdout = (storage.read_frame(uri) for uri in (prepared.train_uri, prepared.holdout_uri))
    assert len(train) + len(holdout) == 302  # the 1025 rows less their 723 duplicates


def test_mlflow_outage_at_registration_registers_nothing_and_a_rerun_succeeds(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast: no 2-minute backoff
    port = free_port()
    server = Service(
        mlflow_server_command(
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            port,
            "--serve-artifacts",
            "--artifacts-destination",
            (tmp_path / "artifacts").as_uri(),
        ),
        port,
        tmp_path / "mlflow.log",
        startup_timeout=120,
    )
    endpoint = f"http://127.0.0.1:{port}"
    settings = fast_settings(tmp_path / "home", mlflow_tracking_uri=endpoint)
    server.start()
    steps: dict = {}

    def stop_server_before_registration(name: str, seconds: float, result) -> None:
        steps[name] = result
        if name == "tune_best_model":
            server.stop()

    try:
        with pytest.raises(RegistryError, match=endpoint):
            run_pipeline(settings, run_key="mlflow-outage", on_step=stop_server_before_registration)
        assert "register_model" not in steps

        server.start()
        registry.configure(settings)
        name = settings.model_name
        assert registry.client().search_model_versions(f"name = '{name}'") == []

        registered = register_model(settings, steps["tune_best_model"], steps["preprocess_data"])
        assert registered.version == "1" and registered.champion is True
        assert registry.version_by_alias(name, registry.CHAMPION).version == "1"
        assert len(registry.client().search_model_versions(f"name = '{name}'")) == 1
    finally:
        server.stop()
