"""The artifact store: local files and a real S3 server, atomic writes, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from heart_mlops import storage
from heart_mlops.errors import StorageError
from tests.support import free_port


def test_local_writes_are_atomic_and_round_trip(tmp_path):
    uri = (tmp_path / "run" / "data.json").as_uri()
    storage.write_json(uri, {"a": 1})
    storage.write_json(uri, {"a": 2})
    assert storage.read_json(uri) == {"a": 2}
    leftovers = [p.name for p in (tmp_path / "run").iterdir()]
    assert leftovers == ["data.json"]  # no temporary file left beside it
    frame = pd.DataFrame({"x": [1.0, None]})
    storage.write_frame(str(tmp_path / "f.parquet"), frame)
    pd.testing.assert_frame_equal(storage.read_frame(str(tmp_path / "f.parquet")), frame)
    assert storage.list_keys(tmp_path.as_uri() + "/run") == [uri]


def test_errors_name_the_object(tmp_path):
    with pytest.raises(StorageError, match="no such file"):
        storage.read_bytes(str(tmp_path / "absent"))
    with pytest.raises(StorageError, match="unsupported URI scheme 'ftp'"):
        storage.read_bytes("ftp://host/x")


def test_s3_round_trip_and_buckets(s3_env):
    created = storage.ensure_buckets()
    assert set(created) <= {"data", "mlflow"}
    assert {p.name for p in s3_env["root"].iterdir()} >= {"data", "mlflow"}
    assert storage.ensure_buckets() == []  # idempotent
    uri = "s3://data/tests/run-1/raw/data.csv"
    storage.write_bytes(uri, b"a,b\n1,2\n")
    assert storage.read_bytes(uri) == b"a,b\n1,2\n"
    assert storage.list_keys("s3://data/tests/run-1") == [uri]
    with pytest.raises(StorageError, match="no such object"):
        storage.read_bytes("s3://data/tests/absent")


def test_s3_down_names_the_endpoint(monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    storage._client.cache_clear()
    try:
        with pytest.raises(StorageError, match=endpoint):
            storage.read_bytes("s3://data/x")
    finally:
        storage._client.cache_clear()
