"""Candidates come from model_params.yaml; every candidate is one pipeline from raw values."""

from __future__ import annotations

import numpy as np
import pytest

from heart_mlops.data import FEATURES
from heart_mlops.errors import ConfigError
from heart_mlops.features import ClinicalInput, transformed_feature_names
from heart_mlops.models import load_candidates
from heart_mlops.settings import Settings


def test_the_three_candidates_are_declared():
    candidates = load_candidates(Settings().model_params_path)
    assert set(candidates) == {"random_forest", "logistic_regression", "svm"}
    for candidate in candidates.values():
        assert candidate.search, candidate.name


def test_a_yaml_entry_adds_a_candidate(tmp_path):
    path = tmp_path / "model_params.yaml"
    path.write_text("""
candidates:
  gradient_boosting:
    estimator: sklearn.ensemble.HistGradientBoostingClassifier
    params: {max_iter: 50}
    search:
      learning_rate: {type: float, low: 0.01, high: 0.3, log: true}
""")
    candidate = load_candidates(path)["gradient_boosting"]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, len(FEATURES)))
    X[:, FEATURES.index("cp")] = rng.integers(0, 4, 60)
    model = candidate.build(seed=0).fit(X, rng.integers(0, 2, 60))
    assert model.predict_proba(X).shape == (60, 2)


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("candidates: {}", "non-empty mapping"),
        ("candidates:\n  x: {estimator: os.system}", "not allowed"),
        ("candidates:\n  x: {estimator: sklearn.svm.Nope}", "cannot import"),
        ("candidates:\n  x: {estimator: sklearn.svm.SVC, params: {colour: red}}", "unknown param"),
        (
            "candidates:\n  x: {estimator: sklearn.svm.SVC, search: {C: {type: normal}}}",
            "type must",
        ),
        ("candidates:\n  x: {estimator: sklearn.svm.SVC, calibration: platt}", "calibration"),
        ("candidates: [", "not valid YAML"),
    ],
)
def test_bad_model_params_are_named(tmp_path, yaml_text, message):
    path = tmp_path / "model_params.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        for candidate in load_candidates(path).values():
            candidate.build(seed=0)


def test_clinical_input_takes_names_or_positions_and_unmasks_missing_codes():
    import pandas as pd

    row = [63, 1, 3, 0, 0, 1, 0, 150, 0, 2.3, 0, 4, 0]
    by_position = ClinicalInput().fit(None).transform(np.array([row], dtype=float))
    shuffled = pd.DataFrame([row], columns=FEATURES)[list(reversed(FEATURES))]
    by_name = ClinicalInput().fit(None).transform(shuffled)
    np.testing.assert_array_equal(by_position, by_name)
    missing = {FEATURES[i] for i in np.flatnonzero(np.isnan(by_position[0]))}
    assert missing == {"trestbps", "chol", "ca", "thal"}
    with pytest.raises(ValueError, match="expected 13 features"):
        ClinicalInput().transform(np.zeros((1, 12)))


def test_transformed_feature_names_match_the_preprocessor():
    from heart_mlops.features import build_preprocessor

    rng = np.random.default_rng(1)
    X = np.column_stack([rng.integers(0, 3, 40) for _ in FEATURES]).astype(float)
    width = build_preprocessor().fit(X).transform(X).shape[1]
    assert width == len(transformed_feature_names())
