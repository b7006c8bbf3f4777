"""Predictions: both body shapes and batches, equal to the registered model's P(disease)."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest

from heart_mlops.data import FEATURES
from tests.api.conftest import SEED

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def registered_model(api_settings):
    """P(disease) of rows, by the registered champion loaded the way MLflow serves it."""
    from heart_mlops import registry
    from heart_mlops.api.model_holder import _REGISTRY_LOCK

    with _REGISTRY_LOCK:
        registry.configure(api_settings)
        model = mlflow.pyfunc.load_model(f"models:/{api_settings.model_name}@champion")

    def disease_probability(rows) -> np.ndarray:
        frame = pd.DataFrame(
            np.array(rows, dtype=float).reshape(-1, len(FEATURES)), columns=list(FEATURES)
        )
        output = model.predict(frame)
        return np.asarray(output)[:, 1]

    return disease_probability


def test_seed_example_matches_the_registered_model(client, registered_model):
    response = client.post("/predict", json={"features": SEED})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prediction"] in (0, 1)
    assert 0.0 <= body["probability"] <= 1.0
    assert body["probability"] == pytest.approx(registered_model([SEED])[0], abs=1e-6)
    assert body["prediction"] == int(body["probability"] >= body["threshold"])
    assert body["label"] == ("heart disease" if body["prediction"] else "no heart disease")
    assert body["model_version"] == client.get("/health").json()["model_version"]


def test_named_shape_with_nulls_is_imputed_like_missing_codes(client, registered_model):
    patient = dict(zip(FEATURES, SEED, strict=True)) | {
        "chol": None,
        "slope": None,
        "ca": None,
        "thal": None,
    }
    named = client.post("/predict", json={"patient": patient})
    assert named.status_code == 200, named.text
    coded = list(SEED)
    coded[FEATURES.index("chol")], coded[FEATURES.index("ca")] = 0, 4  # heart.csv's codes
    coded[FEATURES.index("thal")] = 0
    with_nan = [math.nan if v is None else v for v in patient.values()]
    expected = registered_model([with_nan])[0]
    assert named.json()["probability"] == pytest.approx(expected, abs=1e-6)
    # slope has no missing code: compare with the positional shape where only slope differs
    coded_response = client.post("/predict", json={"features": coded})
    row = list(coded)
    row[FEATURES.index("slope")] = math.nan
    assert coded_response.json()["probability"] == pytest.approx(
        registered_model([coded])[0], abs=1e-6
    )
    assert registered_model([row])[0] == pytest.approx(expected, abs=1e-12)


def test_every_feature_may_be_null_in_the_named_shape(client):
    response = client.post("/predict", json={"patient": dict.fromkeys(FEATURES)})
    assert response.status_code == 200, response.text


def test_batch_answers_in_order_and_equals_single_predictions(client, registered_model):
    rows = pd.read_csv("data/heart.csv").loc[:, list(FEATURES)].head(40).to_numpy().tolist()
    instances = [
        {"features": r} if i % 2 else {"patient": dict(zip(FEATURES, r, strict=True))}
        for i, r in enumerate(rows)
    ]
    response = client.post("/predict/batch", json={"instances": instances})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(rows)
    got = np.array([p["probability"] for p in body["predictions"]])
    np.testing.assert_allclose(got, registered_model(rows), atol=1e-6)
    single = client.post("/predict", json=instances[3]).json()
    assert single["probability"] == pytest.approx(got[3], abs=1e-12)


def test_one_bad_row_rejects_the_batch_naming_row_and_field(client):
    good = {"features": SEED}
    bad = {"patient": dict(zip(FEATURES, SEED, strict=True)) | {"thal": 7}}
    response = client.post("/predict/batch", json={"instances": [good, good, bad]})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "instances[2].patient.thal" in detail and "7" in detail and "1, 2, 3" in detail


def test_batch_over_the_maximum_is_refused(client, api_settings):
    rows = [{"features": SEED}] * (api_settings.api_max_batch + 1)
    response = client.post("/predict/batch", json={"instances": rows})
    assert response.status_code == 422
    assert (
        f"at most {api_settings.api_max_batch}" in response.json()["detail"]
        or str(api_settings.api_max_batch) in response.json()["detail"]
    )


def test_a_full_batch_of_the_maximum_is_answered(client, api_settings):
    rows = [{"features": SEED}] * api_settings.api_max_batch
    response = client.post("/predict/batch", json={"instances": rows})
    assert response.status_code == 200
    assert response.json()["count"] == api_settings.api_max_batch
