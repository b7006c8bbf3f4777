"""`explain=true` over HTTP: every answer adds up to the probability served with it, for the
trained champion and for logistic-regression, random-forest and SVM champions; bad input is
refused as without it; an explanation that cannot be given is null with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from heart_mlops.api import create_app
from heart_mlops.data import FEATURES, load_bytes
from heart_mlops.evaluation import xy
from heart_mlops.explanations import Explainer, implied_probability
from heart_mlops.models import Candidate, load_candidates
from heart_mlops.onnx_model import PARITY_TOLERANCE
from heart_mlops.settings import Settings
from tests.api.conftest import SEED, register_champion, wait_until_ready

pytestmark = pytest.mark.timeout(300)
HEART_CSV = Path("data/heart.csv")
PATIENT = dict(zip(FEATURES, SEED, strict=True))


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    return load_bytes(HEART_CSV.read_bytes()).frame


def _rows(training: pd.DataFrame) -> list[dict]:
    """15 patients of the training data with every value recorded, then 3 with missing values
    (null, a missing code)."""
    rows = training.loc[:, list(FEATURES)].dropna().head(18).astype(float)
    rows.iloc[15, FEATURES.index("thal")] = np.nan
    rows.iloc[16, FEATURES.index("trestbps")] = 0  # heart.csv's code for "not recorded"
    rows.iloc[17, :5] = np.nan
    return [
        {"patient": {k: None if np.isnan(v) else v for k, v in row.items()}}
        for row in (rows.to_dict("records"))
    ]


def _assert_adds_up(prediction: dict) -> dict:
    explanation = prediction["explanation"]
    assert explanation is not None, prediction.get("explanation_unavailable")
    assert abs(implied_probability(explanation) - prediction["probability"]) <= PARITY_TOLERANCE
    assert sorted(c["feature"] for c in explanation["contributions"]) == sorted(FEATURES)
    return explanation


def test_the_seed_patient_explained_adds_up_to_its_probability(client):
    plain = client.post("/predict", json={"features": SEED})
    explained = client.post("/predict?explain=true", json={"features": SEED})
    assert plain.status_code == explained.status_code == 200, explained.text
    assert "explanation" not in plain.json()  # without explain=true, the answer is as before
    body, answer = explained.json(), plain.json()
    del answer["request_id"]  # each answered row has its own
    assert {k: body[k] for k in answer} == answer
    explanation = _assert_adds_up(body)
    assert explanation["units"] in ("log_odds", "probability")
    assert explanation["detail"]
    named = client.post("/predict?explain=1", json={"patient": PATIENT}).json()
    assert named["explanation"] == explanation


@pytest.mark.parametrize("value", ["false", "0", "no", "FALSE"])
def test_explain_false_answers_as_without_it(client, value):
    response = client.post(f"/predict?explain={value}", json={"features": SEED})
    assert response.status_code == 200 and "explanation" not in response.json()


def test_explain_that_is_not_a_boolean_is_refused_naming_the_parameter(client):
    response = client.post("/predict?explain=maybe", json={"features": SEED})
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error == {
        "field": "explain",
        "value": "maybe",
        "message": "is not a boolean",
        "allowed": "true, false",
    }


def test_bad_input_is_refused_the_same_way_with_explain(client):
    bad = {"features": [*SEED[:12], 9]}
    plain = client.post("/predict", json=bad)
    explained = client.post("/predict?explain=true", json=bad)
    assert plain.status_code == explained.status_code == 422
    assert plain.json() == explained.json()
    batch = {"instances": [{"features": SEED}, {"patient": {**PATIENT, "age": 300}}]}
    plain = client.post("/predict/batch", json=batch)
    explained = client.post("/predict/batch?explain=true", json=batch)
    assert plain.status_code == explained.status_code == 422
    assert plain.json() == explained.json()


def test_a_batch_is_explained_row_by_row_with_missing_values_flagged(client, training):
    rows = _rows(training)
    response = client.post("/predict/batch?explain=true", json={"instances": rows})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    explanations = [_assert_adds_up(p) for p in predictions]
    flagged = [{c["feature"] for c in e["contributions"] if c["missing"]} for e in explanations]
    assert flagged[:15] == [set()] * 15
    assert flagged[15:] == [{"thal"}, {"trestbps"}, set(FEATURES[:5])]
    single = client.post("/predict?explain=true", json=rows[15]).json()
    assert single["explanation"] == explanations[15]


def test_a_batch_over_the_explanation_cap_is_refused(client, api_settings):
    limit = api_settings.api_explain_max_rows
    body = {"instances": [{"features": SEED}] * (limit + 1)}
    response = client.post("/predict/batch?explain=true", json=body)
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "instances" and error["allowed"] == f"1 to {limit} rows"
    assert f"at most {limit} rows" in error["message"]
    assert client.post("/predict/batch", json=body).status_code == 200


def test_the_openapi_document_describes_explanations(client):
    document = client.get("/openapi.json").json()
    for path in ("/predict", "/predict/batch"):
        (parameter,) = document["paths"][path]["post"]["parameters"]
        assert parameter["name"] == "explain" and parameter["schema"]["type"] == "boolean"
    schemas = document["components"]["schemas"]
    assert set(schemas["Explanation"]["properties"]["units"]["enum"]) == {"log_odds", "probability"}
    assert "explanation" in schemas["Prediction"]["properties"]
    assert set(schemas["Contribution"]["required"]) == {
        "feature",
        "value",
        "missing",
        "contribution",
    }


def _candidate(name: str, calibration: str | None, **params) -> Candidate:
    entry = load_candidates(Settings().model_params_path)[name]
    return Candidate(name, entry.estimator, {**entry.params, **params}, calibration=calibration)


CHAMPIONS = {
    "logistic-regression": (_candidate("logistic_regression", None), "linear", "log_odds"),
    "random-forest": (
        _candidate("random_forest", None, n_estimators=80),
        "tree_shap",
        "probability",
    ),
    "calibrated-forest": (
        _candidate("random_forest", "sigmoid", n_estimators=80),
        "tree_shap",
        "log_odds",
    ),
    "calibrated-svm": (_candidate("svm", "sigmoid"), "permutation_shap", "probability"),
}


@pytest.mark.parametrize("name", CHAMPIONS)
def test_each_kind_of_champion_is_explained_and_adds_up_over_http(
    own_store,
    training,
    name,
):
    candidate, method, units = CHAMPIONS[name]
    pipeline = candidate.build(seed=0).fit(*xy(training))
    features = training.loc[:, list(FEATURES)].astype(float)
    settings = register_champion(
        own_store, pipeline, f"explained-{name}", features, reference=training
    )
    rows = _rows(training)
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        assert client.get("/model/info").json()["runtime"] == "onnx"
        response = client.post("/predict/batch?explain=true", json={"instances": rows})
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        explanation = _assert_adds_up(prediction)
        assert (explanation["method"], explanation["units"]) == (method, units)
    if method == "permutation_shap":  # it states its budget
        assert (
            "10 antithetic permutations (270 evaluations) against 50 training rows"
            in (explanation["detail"])
        )


def test_a_version_without_training_rows_answers_with_the_reason(own_store, training):
    pipeline = _candidate("logistic_regression", None).build(seed=0).fit(*xy(training))
    features = training.loc[:, list(FEATURES)].astype(float)
    settings = register_champion(own_store, pipeline, "explained-without-rows", features)
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        response = client.post("/predict?explain=true", json={"features": SEED})
        plain = client.post("/predict", json={"features": SEED}).json()
    assert response.status_code == 200
    body = response.json()
    assert body["probability"] == plain["probability"]
    assert body["explanation"] is None
    assert "registered without its training rows" in body["explanation_unavailable"]


def test_an_explainer_that_fails_leaves_the_answer_with_the_reason(client, monkeypatch):
    def fail(self, rows):
        raise RuntimeError("a model this explainer cannot read")

    monkeypatch.setattr(Explainer, "explain", fail)
    response = client.post("/predict/batch?explain=true", json={"instances": [{"features": SEED}]})
    assert response.status_code == 200
    (prediction,) = response.json()["predictions"]
    assert 0 <= prediction["probability"] <= 1
    assert prediction["explanation"] is None
    assert prediction["explanation_unavailable"] == "the explanation failed (RuntimeError)"
