"""Explanations of every candidate: the method each model gets, additivity in its units, right
values where they can be computed by hand, missing values, and the model-agnostic budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from heart_mlops.data import FEATURES, LABEL, load_bytes
from heart_mlops.errors import ExplanationError
from heart_mlops.explanations import Explainer, implied_probability, reference_rows
from heart_mlops.features import transformed_feature_names
from heart_mlops.models import Candidate, load_candidates
from heart_mlops.settings import Settings

HEART_CSV = Path("data/heart.csv")
ADDS_UP = 1e-9  # the exact methods, against the model's own P(disease)
# (candidate, calibration, parameters over model_params.yaml's) -> (method, units)
EXPECTED = {
    ("logistic_regression", None, ()): ("linear", "log_odds"),
    ("logistic_regression", "sigmoid", ()): ("linear", "log_odds"),
    ("logistic_regression", "isotonic", ()): ("permutation_shap", "probability"),
    ("random_forest", None, (("n_estimators", 60),)): ("tree_shap", "probability"),
    ("random_forest", "sigmoid", (("n_estimators", 60),)): ("tree_shap", "log_odds"),
    ("svm", "sigmoid", ()): ("permutation_shap", "probability"),
    ("svm", "sigmoid", (("kernel", "linear"),)): ("linear", "log_odds"),
}


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    return load_bytes(HEART_CSV.read_bytes()).frame


@pytest.fixture(scope="module")
def rows(training) -> np.ndarray:
    """40 training rows, then 3 with missing values: NaN and the missing codes of heart.csv."""
    sample = reference_rows(training)[:43].copy()
    sample[40, FEATURES.index("ca")] = np.nan
    sample[41, FEATURES.index("chol")] = 0  # heart.csv's code for "not recorded"
    sample[42, :] = np.nan
    return sample


def _fitted(training, name: str, calibration: str | None, params: dict):
    entry = load_candidates(Settings().model_params_path)[name]
    candidate = Candidate(
        name, entry.estimator, {**entry.params, **params}, calibration=calibration
    )
    return candidate.build(seed=0).fit(training.loc[:, list(FEATURES)], training[LABEL])


@pytest.fixture(scope="module")
def explainers(training) -> dict:
    found = {}
    for (name, calibration, params), _ in EXPECTED.items():
        pipeline = _fitted(training, name, calibration, dict(params))
        found[(name, calibration, params)] = (
            pipeline,
            Explainer(pipeline, reference_rows(training), background_rows=30, permutations=4),
        )
    return found


@pytest.mark.parametrize("case", EXPECTED, ids=lambda c: "-".join(map(str, c[:2])) + str(c[2]))
def test_each_model_gets_its_method_and_the_explanation_adds_up(case, explainers, rows):
    pipeline, explainer = explainers[case]
    method, units = EXPECTED[case]
    assert (explainer.method, explainer.units) == (method, units)
    expected = pipeline.predict_proba(rows)[:, 1]
    for explanation, p in zip(explainer.explain(rows), expected, strict=True):
        assert explanation["method"] == method and explanation["units"] == units
        assert abs(implied_probability(explanation) - p) <= ADDS_UP
        contributions = explanation["contributions"]
        assert sorted(c["feature"] for c in contributions) == sorted(FEATURES)
        sizes = [abs(c["contribution"]) for c in contributions]
        assert sizes == sorted(sizes, reverse=True)


def test_linear_contributions_are_coefficient_times_distance_from_the_training_mean(training, rows):
    pipeline = _fitted(training, "logistic_regression", None, {})
    (explanation,) = Explainer(pipeline, reference_rows(training)).explain(rows[:1])
    model, scaler = pipeline[-1], pipeline[0]["columns"].named_transformers_["numeric"]["scale"]
    age = FEATURES.index("age")
    # age is the first scaled column; scaled training values have mean 0
    expected = model.coef_[0, 0] * (rows[0, age] - scaler.mean_[0]) / scaler.scale_[0]
    by_feature = {c["feature"]: c for c in explanation["contributions"]}
    assert by_feature["age"]["contribution"] == pytest.approx(expected, abs=1e-12)
    # the base value: the log-odds at the mean of the training rows' model columns
    z_mean = np.asarray(pipeline[0].transform(reference_rows(training))).mean(axis=0)
    base = float(model.intercept_[0] + model.coef_[0] @ z_mean)
    assert explanation["base_value"] == pytest.approx(base, abs=1e-12)
    # one feature changed: only its contribution moves, by the change in log-odds
    older = rows[:1].copy()
    older[0, age] += 10
    (changed,) = Explainer(pipeline, reference_rows(training)).explain(older)
    moved = {c["feature"]: c["contribution"] for c in changed["contributions"]}
    for feature, c in by_feature.items():
        if feature != "age":
            assert moved[feature] == pytest.approx(c["contribution"], abs=1e-12)
    p_before, p_after = pipeline.predict_proba(np.vstack([rows[:1], older]))[:, 1]
    assert moved["age"] - by_feature["age"]["contribution"] == pytest.approx(
        logit(p_after) - logit(p_before), abs=1e-9
    )


def test_a_single_split_tree_gives_its_whole_effect_to_its_feature(training, rows):
    params = {"n_estimators": 1, "max_depth": 1, "bootstrap": False, "max_features": None}
    pipeline = _fitted(training, "random_forest", None, params)
    explainer = Explainer(pipeline, reference_rows(training))
    assert explainer.method == "tree_shap"
    tree = pipeline[-1].estimators_[0].tree_
    feature = transformed_feature_names()[tree.feature[0]].split("=")[0]
    p = pipeline.predict_proba(rows)[:, 1]
    # TreeSHAP's base value is the training mean of the tree's output (node-weighted)
    leaf_values = tree.value[[1, 2], 0, 1]
    weights = tree.weighted_n_node_samples[[1, 2]] / tree.weighted_n_node_samples[0]
    base = float(leaf_values @ weights)
    for explanation, p_row in zip(explainer.explain(rows), p, strict=True):
        assert explanation["base_value"] == pytest.approx(base, abs=1e-12)
        first, *rest = explanation["contributions"]
        if p_row != pytest.approx(base, abs=1e-12):
            assert first["feature"] == feature
            assert first["contribution"] == pytest.approx(p_row - base, abs=1e-12)
        assert all(c["contribution"] == 0 for c in rest)


def test_missing_values_are_flagged_with_the_value_imputed(explainers, training, rows):
    pipeline, explainer = explainers[("logistic_regression", "sigmoid", ())]
    explained = explainer.explain(rows[40:43])
    train = training.loc[:, list(FEATURES)].replace({"chol": {0: np.nan}})
    ca_mode = float(train["ca"].mode().iloc[0])
    chol_median = float(train["chol"].median())
    by = [{c["feature"]: c for c in e["contributions"]} for e in explained]
    assert by[0]["ca"]["missing"] and by[0]["ca"]["value"] == ca_mode
    assert not by[0]["age"]["missing"] and by[0]["age"]["value"] == rows[40, 0]
    assert by[1]["chol"]["missing"] and by[1]["chol"]["value"] == chol_median
    assert all(c["missing"] for c in by[2].values())  # nothing known: every value imputed


def test_the_model_agnostic_method_states_its_budget_and_repeats_itself(explainers, rows):
    pipeline, explainer = explainers[("svm", "sigmoid", ())]
    first, again = explainer.explain(rows[:3]), explainer.explain(rows[:3])
    assert first == again
    assert (
        "4 antithetic permutations (108 evaluations) against 30 training rows"
        in (first[0]["detail"])
    )
    assert first[0]["detail"].startswith("estimated")


def test_the_model_agnostic_base_value_is_the_mean_over_the_background(training, rows):
    pipeline = _fitted(training, "logistic_regression", "isotonic", {})
    reference = reference_rows(training)
    explainer = Explainer(pipeline, reference, background_rows=len(reference), permutations=2)
    (explanation,) = explainer.explain(rows[:1])
    mean = float(pipeline.predict_proba(reference)[:, 1].mean())
    assert explanation["base_value"] == pytest.approx(mean, abs=1e-12)


def test_the_model_agnostic_method_explains_the_served_function_when_given(training, rows):
    pipeline = _fitted(training, "svm", "sigmoid", {})
    shifted = lambda x: pipeline.predict_proba(x)[:, 1] * 0.5  # noqa: E731 (a stand-in runtime)
    explainer = Explainer(pipeline, reference_rows(training), permutations=2, served=shifted)
    for explanation, p in zip(explainer.explain(rows[:5]), shifted(rows[:5]), strict=True):
        assert abs(implied_probability(explanation) - p) <= ADDS_UP


def test_no_training_rows_no_explainer(training):
    pipeline = _fitted(training, "logistic_regression", None, {})
    with pytest.raises(ExplanationError, match="no training rows"):
        Explainer(pipeline, np.empty((0, len(FEATURES))))
