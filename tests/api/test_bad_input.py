"""Every kind of bad input gets a 4xx naming the field or position, the value and what is
allowed; never a 5xx, and the server keeps serving."""

from __future__ import annotations

import json

import pytest

from heart_mlops.data import FEATURES
from tests.api.conftest import SEED

pytestmark = pytest.mark.timeout(300)


def seed_with(position: int, value) -> dict:
    values = list(SEED)
    values[position] = value
    return {"features": values}


def patient_with(**changes) -> dict:
    return {"patient": dict(zip(FEATURES, SEED, strict=True)) | changes}


def without(name: str) -> dict:
    patient = dict(zip(FEATURES, SEED, strict=True))
    del patient[name]
    return {"patient": patient}


JSON_CASES = {
    # body: (status, words the message must contain)
    "too few values": ({"features": SEED[:12]}, ["features", "13 values", "got 12"]),
    "too many values": ({"features": SEED + [1]}, ["features", "13 values", "got 14"]),
    "string value": (seed_with(0, "63"), ["features[0] (age)", "'63'", "not a number"]),
    "boolean value": (seed_with(1, True), ["features[1] (sex)", "True", "0, 1"]),
    "boolean in patient": (patient_with(exang=False), ["patient.exang", "False", "0, 1"]),
    "null in features": (seed_with(3, None), ["features[3] (trestbps)", "None"]),
    "age out of range": (seed_with(0, 130), ["features[0] (age)", "130", "1 to 120"]),
    "oldpeak out of range": (patient_with(oldpeak=-7.5), ["patient.oldpeak", "-7.5", "-5 to 10"]),
    "chol between 0 and range": (
        seed_with(4, 30),
        ["features[4] (chol)", "30", "60 to 700 (0 = missing)"],
    ),
    "unknown cp code": (seed_with(2, 4), ["features[2] (cp)", "4", "0, 1, 2, 3"]),
    "fractional code": (patient_with(slope=1.5), ["patient.slope", "1.5", "0, 1, 2"]),
    "thal code 4": (patient_with(thal=4), ["patient.thal", "4", "1, 2, 3 (0 = missing)"]),
    "unknown field in patient": (patient_with(weight=80), ["patient.weight", "unknown field"]),
    "unknown top-level field": ({"features": SEED, "extra": 1}, ["extra", "unknown field"]),
    "missing field": (without("ca"), ["patient.ca", "missing"]),
    "neither shape": ({"rows": [SEED]}, ["body", "'features'", "'patient'"]),
    "array body": ([SEED], ["body", "'features'"]),
    "number body": (5, ["body"]),
    "features not a list": ({"features": "63,1,3"}, ["features"]),
    "patient not an object": ({"patient": SEED}, ["patient"]),
    "nested too deep": ({"features": [SEED]}, ["features[0] (age)"]),
}


@pytest.mark.parametrize("body, words", JSON_CASES.values(), ids=JSON_CASES.keys())
@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
def test_invalid_json_bodies(client, route, body, words):
    if route == "/predict/batch":
        body = {"instances": [{"features": SEED}, body]}
        words = [
            w.replace("features", "instances[1].features", 1).replace(
                "patient.", "instances[1].patient.", 1
            )
            if w[:4] in ("feat", "pati")
            else w
            for w in words
            if w != "body"
        ]
    response = client.post(route, json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, (word, detail)


RAW_CASES = {
    "NaN": (
        b'{"features": [NaN, 1, 3, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1]}',
        422,
        ["features[0] (age)", "nan", "finite"],
    ),
    "Infinity": (
        b'{"features": [63, 1, 3, 145, 233, 1, 0, 150, 0, Infinity, 0, 0, 1]}',
        422,
        ["features[9] (oldpeak)", "inf", "finite"],
    ),
    "huge number": (
        b'{"features": [63, 1, 3, 145, 233, 1, 0, 150, 0, 1e999, 0, 0, 1]}',
        422,
        ["features[9] (oldpeak)", "finite"],
    ),
    "empty body": (b"", 422, ["not valid JSON"]),
    "not JSON": (b"age=63&sex=1", 422, ["not valid JSON"]),
    "truncated JSON": (b'{"features": [63, 1', 422, ["not valid JSON"]),
    "invalid UTF-8": (b'{"features": [63, 1, "\xff"]}', 422, ["JSON"]),
}


@pytest.mark.parametrize("raw, status, words", RAW_CASES.values(), ids=RAW_CASES.keys())
def test_invalid_raw_bodies(client, raw, status, words):
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, (word, detail)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_wrong_content_type(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/predict", content=json.dumps({"features": SEED}), headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


def test_json_with_charset_is_accepted(client):
    response = client.post(
        "/predict",
        content=json.dumps({"features": SEED}),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


def test_body_over_the_size_limit(client, api_settings):
    body = b'{"features": [' + b" " * api_settings.api_max_body_bytes + b"]}"
    response = client.post(
        "/predict/batch", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert str(api_settings.api_max_body_bytes) in response.json()["detail"]


def test_streamed_body_over_the_size_limit(client, api_settings):
    def chunks():  # no Content-Length: the limit holds while reading
        yield b'{"instances": ['
        for _ in range(api_settings.api_max_body_bytes // 60 + 10):
            yield json.dumps({"features": SEED}).encode() + b","

    response = client.post(
        "/predict/batch", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_wrong_method_and_unknown_route(client):
    assert client.get("/predict").status_code == 405
    assert client.post("/nothing-here", json={}).status_code == 404


def test_the_server_keeps_serving_after_bad_input(client):
    for raw in (b"", b"{", b"[]", b'{"features": null}', b"\x00" * 100):
        assert (
            client.post(
                "/predict", content=raw, headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
    assert client.post("/predict", json={"features": SEED}).status_code == 200
    assert client.get("/health").json()["model_loaded"] is True
