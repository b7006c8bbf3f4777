"""Reading and validating JSON bodies, and the error answers: no model or trained store needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from heart_mlops.api import schemas
from heart_mlops.api.body import _decoded_rows, parse, parse_rows, read_json
from heart_mlops.api.errors import ApiError, add_error_handlers, error_responses
from tests.api.conftest import SEED

MAX_BYTES = 1024


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    add_error_handlers(app)

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        item = parse(schemas.PREDICT_REQUEST, await read_json(request, MAX_BYTES), max_rows=5)
        return {"row": schemas.feature_row(item)}

    @app.get("/teapot")
    async def teapot() -> None:
        raise ApiError(418, "short and stout", headers={"X-Spout": "1"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a secret detail")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def post(client, content, content_type: str | None = "application/json"):
    headers = {"content-type": content_type} if content_type else {}
    return client.post("/echo", content=content, headers=headers)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/problem+json",
    ],
)
def test_json_media_types_are_read(client, content_type):
    response = post(client, json.dumps({"features": SEED}), content_type)
    assert response.status_code == 200 and response.json() == {"row": SEED}


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data", None])
def test_other_media_types_are_415(client, content_type):
    response = post(client, json.dumps({"features": SEED}), content_type)
    assert response.status_code == 415
    assert response.json()["detail"].startswith("Content-Type must be application/json, got '")


def test_a_declared_length_over_the_limit_is_413_before_reading(client):
    response = post(client, b" " * (MAX_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["detail"] == (
        f"the body has {MAX_BYTES + 1} bytes; at most "
        f"{MAX_BYTES} allowed (HEART_MLOPS_API_MAX_BODY_BYTES)"
    )


def test_a_streamed_body_over_the_limit_is_413(client):
    response = post(client, (b" " * 100 for _ in range(MAX_BYTES // 100 + 1)))
    assert response.status_code == 413
    assert response.json()["detail"] == (
        f"the body exceeds {MAX_BYTES} bytes (HEART_MLOPS_API_MAX_BODY_BYTES)"
    )


def test_a_body_at_the_limit_is_read(client):
    body = json.dumps({"features": SEED}).encode()
    response = post(client, body + b" " * (MAX_BYTES - len(body)))
    assert response.status_code == 200


def test_invalid_bodies_are_422_with_every_error(client):
    response = post(client, json.dumps({"features": SEED[:12]}))
    assert response.status_code == 422
    body = response.json()
    assert body["detail"].startswith("features: expected 13 values")
    assert body["errors"] == [
        {
            "field": "features",
            "value": SEED[:12],
            "message": body["detail"].removeprefix("features: "),
        }
    ]


def _with(text: str, replaced: str, by: str) -> bytes:
    assert replaced in text
    return text.replace(replaced, by, 1).encode()


FEATURES_BODY = json.dumps({"features": SEED})
PATIENT_BODY = json.dumps({"patient": dict(zip(schemas.FEATURES, SEED, strict=True))})
BATCH_BODY = json.dumps({"instances": [{"features": SEED}, json.loads(PATIENT_BODY)]})


@pytest.mark.parametrize(
    "body, field, shown",
    [
        (_with(FEATURES_BODY, "[63,", f"[{'9' * 5000},"), "features[0] (age)", "inf"),
        (_with(PATIENT_BODY, '"chol": 233', '"chol": -1e999'), "patient.chol", "-inf"),
        (_with(PATIENT_BODY, '"chol": 233', f'"chol": {"1" * 400}'), "patient.chol", "inf"),
        (_with(FEATURES_BODY, "150,", "1e30,"), "features[7] (thalach)", 1e30),
    ],
    ids=["5000 digits", "-1e999", "400 digits", "1e30"],
)
def test_a_number_beyond_the_float_range_names_its_field_not_invalid_json(body, field, shown):
    with pytest.raises(ApiError) as raised:
        parse(schemas.PREDICT_REQUEST, body, max_rows=5)
    assert raised.value.status == 422
    (error,) = raised.value.errors
    assert error["field"] == field and error["value"] == shown, error
    assert "allowed" in error and "JSON" not in raised.value.detail


@pytest.mark.parametrize(
    "adapter, body, key",
    [
        (schemas.PREDICT_REQUEST, FEATURES_BODY[:-1] + f', "features": {SEED}}}', "features"),
        (schemas.PREDICT_REQUEST, _with(PATIENT_BODY, '"sex": 1', '"sex": 1, "age": 30'), "age"),
        (schemas.batch_request(5), _with(BATCH_BODY, '"ca": 0', '"ca": 0, "ca": 1'), "ca"),
        (schemas.batch_request(5), _with(BATCH_BODY, "{", '{"instances": [], '), "instances"),
    ],
    ids=["features", "patient", "batch row", "instances"],
)
def test_a_key_given_twice_is_422_naming_it_not_last_one_wins(client, adapter, body, key):
    with pytest.raises(ApiError) as raised:
        parse(adapter, body if isinstance(body, bytes) else body.encode(), max_rows=5)
    assert raised.value.status == 422
    assert raised.value.errors[0]["field"] == key
    assert raised.value.detail == (
        f"{key}: the key '{key}' appears more than once in one object; give each field once"
    )


def test_bodies_with_each_key_once_are_read_in_both_shapes(client):
    for body in (FEATURES_BODY, PATIENT_BODY):
        assert post(client, body).json() == {"row": SEED}
    batch = parse(schemas.batch_request(5), BATCH_BODY.encode(), max_rows=5)
    assert schemas.key_count(batch) == 1 + 1 + 14 == BATCH_BODY.count('"') // 2


def test_parse_quotes_the_batch_limit():
    with pytest.raises(ApiError) as raised:
        parse(schemas.batch_request(2), b'{"instances": [{"features": [1]}, 1, 2]}', max_rows=2)
    assert raised.value.status == 422
    assert any("1 to 2 rows; got 3" in e["message"] for e in raised.value.errors)


def test_an_api_error_keeps_its_status_and_headers_without_an_errors_list(client):
    response = client.get("/teapot")
    assert response.status_code == 418 and response.headers["x-spout"] == "1"
    assert response.json() == {"detail": "short and stout"}


def test_an_unexpected_error_is_500_without_its_details(client):
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the server log has the details"}


def test_error_responses_document_the_error_body():
    documented = error_responses(401, 503)
    assert set(documented) == {401, 503}
    assert documented[503]["model"] is schemas.ErrorResponse
    with pytest.raises(KeyError):
        error_responses(500)


# --- parse_rows: msgspec straight into the matrix, `parse` for everything it does not accept --

VALID_BODIES = {
    "features": (FEATURES_BODY.encode(), False),
    "patient with nulls": (_with(PATIENT_BODY, '"chol": 233', '"chol": null'), False),
    "missing codes": (_with(FEATURES_BODY, "0, 1]", "4, 0]"), False),
    "batch of both shapes": (BATCH_BODY.encode(), True),
    "integers and floats": (_with(FEATURES_BODY, "[63,", "[63.0,"), False),
}
INVALID_BODIES = {
    "boolean": (_with(FEATURES_BODY, "[63, 1,", "[63, true,"), False),
    "string": (_with(FEATURES_BODY, "[63,", '["63",'), False),
    "code not allowed": (_with(FEATURES_BODY, "0, 1]", "0, 5]"), False),
    "out of range": (_with(PATIENT_BODY, '"age": 63', '"age": 630'), False),
    "beyond float range": (_with(FEATURES_BODY, "150,", "1e999,"), False),
    "null in features": (_with(FEATURES_BODY, "[63,", "[null,"), False),
    "12 values": (json.dumps({"features": SEED[:12]}).encode(), False),
    "unknown field": (_with(PATIENT_BODY, '"sex": 1', '"sex": 1, "weight": 80'), False),
    "missing field": (_with(PATIENT_BODY, '"sex": 1, ', ""), False),
    "repeated key": (_with(BATCH_BODY, '"ca": 0', '"ca": 0, "ca": 1'), True),
    "repeated instances": (_with(BATCH_BODY, "{", '{"instances": [], '), True),
    "too many rows": (json.dumps({"instances": [{"features": SEED}] * 6}).encode(), True),
    "empty batch": (b'{"instances": []}', True),
    "both shapes in one row": (
        json.dumps({"features": SEED, "patient": json.loads(PATIENT_BODY)["patient"]}).encode(),
        False,
    ),
}


def _validated(body: bytes, batch: bool) -> np.ndarray:
    """The matrix through pydantic alone (the path that names errors)."""
    if batch:
        return schemas.feature_matrix(parse(schemas.batch_request(5), body, max_rows=5).instances)
    return np.array([schemas.feature_row(parse(schemas.PREDICT_REQUEST, body, max_rows=5))])


@pytest.mark.parametrize("name", VALID_BODIES)
def test_valid_bodies_decode_straight_into_the_validated_matrix(name):
    body, batch = VALID_BODIES[name]
    fast = _decoded_rows(body, batch, 5)
    assert fast is not None, "the common forms take the msgspec path"
    np.testing.assert_array_equal(fast, _validated(body, batch))
    np.testing.assert_array_equal(parse_rows(body, batch=batch, max_rows=5), fast)


@pytest.mark.parametrize("name", INVALID_BODIES)
def test_invalid_bodies_get_the_same_422_from_parse_rows_as_from_parse(name):
    body, batch = INVALID_BODIES[name]
    assert _decoded_rows(body, batch, 5) is None
    with pytest.raises(ApiError) as expected:
        _validated(body, batch)
    with pytest.raises(ApiError) as raised:
        parse_rows(body, batch=batch, max_rows=5)
    assert raised.value.status == expected.value.status == 422
    assert (raised.value.detail, raised.value.errors) == (
        expected.value.detail,
        expected.value.errors,
    )
