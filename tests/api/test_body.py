"""Reading and validating JSON bodies, and the error answers: no model or trained store needed."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from heart_mlops.api import schemas
from heart_mlops.api.body import parse, read_json
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
