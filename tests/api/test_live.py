"""Over real HTTP (uvicorn on a loopback port): end-to-end calls and a schemathesis run over
the OpenAPI schema with no server error."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from heart_mlops.data import FEATURES
from tests.api.conftest import SEED

pytestmark = pytest.mark.timeout(600)


def test_predict_over_http(live_url):
    with httpx.Client(base_url=live_url, timeout=30) as http:
        single = http.post("/predict", json={"features": SEED})
        assert single.status_code == 200 and single.headers["content-type"] == "application/json"
        probability = single.json()["probability"]
        named = http.post("/predict", json={"patient": dict(zip(FEATURES, SEED, strict=True))})
        assert named.json()["probability"] == probability
        batch = http.post("/predict/batch", json={"instances": [{"features": SEED}] * 3})
        assert [p["probability"] for p in batch.json()["predictions"]] == pytest.approx(
            [probability] * 3, abs=1e-12
        )


def test_streamed_body_over_the_limit_over_http(live_url, api_settings):
    def chunks():
        yield b'{"instances": ['
        for _ in range(api_settings.api_max_body_bytes // 4096 + 2):
            yield b" " * 4096

    with httpx.Client(base_url=live_url, timeout=30) as http:
        response = http.post(
            "/predict/batch", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert http.get("/health").status_code == 200


@pytest.fixture(scope="module")
def api_schema(live_url):
    return schemathesis.openapi.from_url(f"{live_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_for_any_generated_request(case):
    case.call_and_validate(checks=[not_a_server_error])
