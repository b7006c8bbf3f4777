"""The serving runtime gives the registered model's probabilities (within 1e-6) on every row
of data/heart.csv, for the champion and for each estimator type it compiles."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from heart_mlops import registry
from heart_mlops.api.model_holder import _REGISTRY_LOCK
from heart_mlops.api.runtime import compile_pipeline, probe_rows
from heart_mlops.data import FEATURES, load_bytes
from heart_mlops.evaluation import xy
from heart_mlops.models import Candidate, load_candidates

pytestmark = pytest.mark.timeout(300)
HEART_CSV = "data/heart.csv"


@pytest.fixture(scope="module")
def heart_rows() -> pd.DataFrame:
    return pd.read_csv(HEART_CSV).loc[:, list(FEATURES)].astype(float)


def test_served_probabilities_equal_the_registered_champion_on_every_row(
    client, api_settings, heart_rows
):
    with _REGISTRY_LOCK:
        registry.configure(api_settings)
        pyfunc = mlflow.pyfunc.load_model(f"models:/{api_settings.model_name}@champion")
    expected = np.asarray(pyfunc.predict(heart_rows))[:, 1]
    instances = [{"features": row} for row in heart_rows.to_numpy().tolist()]
    served = []
    for start in range(0, len(instances), api_settings.api_max_batch):
        response = client.post(
            "/predict/batch", json={"instances": instances[start : start + 1000]}
        )
        assert response.status_code == 200, response.text
        served += [p["probability"] for p in response.json()["predictions"]]
    assert len(served) == len(heart_rows)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
    # single rows through /predict too
    for index in range(0, len(instances), 97):
        single = client.post("/predict", json=instances[index]).json()["probability"]
        assert abs(single - expected[index]) <= 1e-6


EXTRA_CANDIDATES = {
    "extra_trees": Candidate(
        "extra_trees", "sklearn.ensemble.ExtraTreesClassifier", {"n_estimators": 50}
    ),
    "linear_svm": Candidate(
        "linear_svm", "sklearn.svm.SVC", {"kernel": "linear"}, calibration="sigmoid"
    ),
    "gradient_boosting": Candidate(
        "gradient_boosting", "sklearn.ensemble.GradientBoostingClassifier", {"n_estimators": 30}
    ),  # no compiled form: sklearn serves it
}


@pytest.mark.parametrize("name", ["random_forest", "logistic_regression", "svm", *EXTRA_CANDIDATES])
def test_runtime_matches_sklearn_for_each_estimator(name, heart_rows):
    from heart_mlops.settings import Settings

    candidate = (load_candidates(Settings().model_params_path) | EXTRA_CANDIDATES)[name]
    dataset = load_bytes(Path(HEART_CSV).read_bytes())
    pipeline = candidate.build(seed=0).fit(*xy(dataset.frame))
    runtime = compile_pipeline(pipeline)
    assert runtime.kind == "compiled"
    for rows in (heart_rows.to_numpy(), probe_rows(300, seed=1)):
        expected = pipeline.predict_proba(pd.DataFrame(rows, columns=list(FEATURES)))[:, 1]
        np.testing.assert_allclose(runtime(rows), expected, rtol=0, atol=1e-9)
        for row in rows[:25]:  # one row at a time, as /predict runs it
            assert (
                abs(runtime(row[None, :])[0] - pipeline.predict_proba(row[None, :])[0, 1]) <= 1e-9
            )


def test_unknown_steps_fall_back_to_plain_sklearn(heart_rows):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from heart_mlops.features import build_preprocessor

    dataset = load_bytes(Path(HEART_CSV).read_bytes())
    pipeline = Pipeline(
        [
            ("preprocess", build_preprocessor()),
            ("odd", FunctionTransformer(np.tanh)),
            ("model", KNeighborsClassifier()),
        ]
    ).fit(*xy(dataset.frame))
    runtime = compile_pipeline(pipeline)
    assert runtime.kind == "sklearn"
    rows = heart_rows.to_numpy()
    np.testing.assert_allclose(runtime(rows), pipeline.predict_proba(rows)[:, 1], atol=1e-12)
