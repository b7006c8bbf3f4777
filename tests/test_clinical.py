"""Calibration, bootstrap intervals, decision curve, threshold policy, subgroups and the HTML
report, on synthetic cases whose answers are known."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from heart_mlops.evaluation import (
    bootstrap,
    calibration_slope_intercept,
    clinical_evidence,
    cross_validated,
    decision_curve,
    decision_threshold,
    figures_at,
    sensitivity_specificity,
    subgroup_report,
    subgroups,
    threshold_for_sensitivity,
    xy,
)
from heart_mlops.model_card import INTENDED_USE, LIMITATIONS
from heart_mlops.report import SECTIONS, TRIPOD_AI, render
from tests.support import fitted_candidate, heart_split


def outcomes(log_odds: np.ndarray, seed: int = 0) -> np.ndarray:
    """0/1 outcomes drawn with P(1) = expit(log_odds): a score of expit(log_odds) is calibrated."""
    return (np.random.default_rng(seed).random(len(log_odds)) < expit(log_odds)).astype(int)


TRUE_LOG_ODDS = np.random.default_rng(1).normal(0, 2, 40_000)
Y = outcomes(TRUE_LOG_ODDS)


def test_a_calibrated_score_has_slope_1_and_intercept_0():
    slope, intercept = calibration_slope_intercept(Y, expit(TRUE_LOG_ODDS))
    assert slope == pytest.approx(1, abs=0.04) and intercept == pytest.approx(0, abs=0.04)


def test_a_score_squeezed_toward_half_has_slope_above_1():
    slope, intercept = calibration_slope_intercept(Y, expit(TRUE_LOG_ODDS / 2))
    assert slope == pytest.approx(2, abs=0.1)  # under-confident by a factor of 2
    assert intercept == pytest.approx(0, abs=0.05)


def test_an_over_confident_score_has_slope_below_1_and_a_shifted_one_an_intercept():
    slope, _ = calibration_slope_intercept(Y, expit(TRUE_LOG_ODDS * 2))
    assert slope == pytest.approx(0.5, abs=0.03)
    _, intercept = calibration_slope_intercept(Y, expit(TRUE_LOG_ODDS - 1))  # predicts too low
    assert intercept == pytest.approx(1, abs=0.05)


def test_calibration_of_one_class_is_not_a_number():
    assert all(np.isnan(calibration_slope_intercept(np.ones(10), np.full(10, 0.7))))


def test_the_threshold_for_a_sensitivity_is_the_highest_that_reaches_it():
    diseased = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    y = np.array([1] * 10 + [0] * 5)
    p = np.array(diseased + [0.95, 0.5, 0.3, 0.2, 0.01])
    assert threshold_for_sensitivity(y, p, 0.9) == 0.1  # 9 of 10 at p >= 0.1
    assert threshold_for_sensitivity(y, p, 0.75) == 0.2  # 8 of 10 (7.5 rounded up)
    assert threshold_for_sensitivity(y, p, 1.0) == 0.05
    for target in (0.9, 0.75, 0.5, 1.0):
        t = threshold_for_sensitivity(y, p, target)
        assert sensitivity_specificity(y, p, t)[0] >= target
        assert sensitivity_specificity(y, p, t + 0.001)[0] < target  # the highest one
    # out-of-fold predictions of several repeats count every repeat
    assert threshold_for_sensitivity(y, np.vstack([p, p]), 0.9) == 0.1
    with pytest.raises(ValueError, match="not in"):
        threshold_for_sensitivity(y, p, 0)


def test_the_threshold_policy_is_fixed_or_by_sensitivity():
    y, p = np.array([1, 1, 0, 0]), np.array([0.8, 0.3, 0.6, 0.1])
    policy = dict(fixed=0.5, target_sensitivity=1.0)
    assert decision_threshold(y, p, policy="fixed", **policy) == 0.5
    assert decision_threshold(y, p, policy="sensitivity", **policy) == 0.3
    with pytest.raises(ValueError, match="not one of"):
        decision_threshold(y, p, policy="youden", **policy)


def test_net_benefit_of_four_patients_worked_by_hand():
    y, p = np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1])
    curve = decision_curve(y, p, np.array([0.2, 0.5]))
    # t = 0.2: treat 3 (2 TP, 1 FP): 2/4 - 1/4 * 0.25; treat all: 2/4 - 2/4 * 0.25
    # t = 0.5: treat 2 (1 TP, 1 FP): 1/4 - 1/4 * 1;    treat all: 2/4 - 2/4 * 1
    np.testing.assert_allclose(curve["model"], [0.5 - 0.0625, 0.0])
    np.testing.assert_allclose(curve["treat_all"], [0.5 - 0.125, 0.0])
    assert (curve["treat_none"] == 0).all()


def test_bootstrap_is_seeded_and_its_interval_holds_the_estimate():
    y, p = Y[:300], expit(TRUE_LOG_ODDS[:300])
    first = bootstrap(figures_at(0.5), y, p, samples=200, seed=7)
    assert bootstrap(figures_at(0.5), y, p, samples=200, seed=7) == first
    for name, figure in first.items():
        assert figure["low"] <= figure["value"] <= figure["high"], name
    assert first["roc_auc"]["high"] - first["roc_auc"]["low"] > 0.01  # 300 patients: not exact
    # out-of-fold repeats of the same patients: resampled together, the same point estimate
    both = bootstrap(figures_at(0.5), y, np.vstack([p, p]), samples=200, seed=7)
    assert both["roc_auc"]["value"] == pytest.approx(first["roc_auc"]["value"])


def test_a_subgroup_under_the_minimum_is_too_few_not_a_number():
    X = pd.DataFrame({"sex": [1] * 60 + [0] * 12, "age": np.linspace(30, 75, 72)})
    y = np.array([0, 1] * 36)
    p = np.clip(y * 0.6 + 0.2, 0, 1)
    groups = subgroups(X, [50, 60])
    assert list(groups) == ["male", "female", "age < 50", "age 50-59", "age >= 60"]
    assert sum(groups["age < 50"] | groups["age 50-59"] | groups["age >= 60"]) == 72
    report = subgroup_report(groups, y, p, threshold=0.5, min_n=30, samples=50, seed=0)
    assert report["female"] == {"n": 12, "positives": 6, "too_few": True, "metrics": None}
    assert report["male"]["too_few"] is False and report["male"]["n"] == 60
    assert report["male"]["metrics"]["sensitivity"]["value"] == 1.0


@pytest.fixture(scope="module")
def document():
    train, holdout = heart_split()
    model = fitted_candidate("logistic_regression", train)
    cv = cross_validated(model, train, folds=3, repeats=1, seed=42, n_jobs=1)
    evidence = clinical_evidence(
        cv,
        train,
        threshold_policy="sensitivity",
        fixed_threshold=0.5,
        target_sensitivity=0.9,
        age_bands=[50, 60],
        min_n=30,
        samples=50,
        seed=42,
    )
    X, y = xy(holdout)
    p = model.predict_proba(X)[:, 1]
    threshold = evidence["threshold"]["value"]
    return {
        "model_name": "heart_disease_classifier",
        "version": "7",
        "candidate": "logistic_regression",
        "calibration": "sigmoid",
        "label": "untuned",
        "params": {"C": 1.0},
        "selection_metric": "log_loss",
        "synthetic": False,
        "fingerprint": {"sha256": "ab12", "format": "csv", "rows_raw": 1025},
        "evidence": evidence | {"candidates": [{"name": "logistic_regression", **cv.scores}]},
        "holdout": bootstrap(figures_at(threshold), y, p, samples=50, seed=42),
        "holdout_predictions": {"y": y.tolist(), "p": p.tolist()},
    }


def test_the_evidence_chooses_the_threshold_by_policy_from_out_of_fold_predictions(document):
    evidence = document["evidence"]
    y, oof = np.array(evidence["predictions"]["y"]), np.array(evidence["predictions"]["oof"])
    assert evidence["threshold"]["value"] == threshold_for_sensitivity(y, oof, 0.9)
    assert evidence["out_of_fold"]["sensitivity"]["value"] >= 0.9
    assert len(evidence["decision_curve"]) == 91


def test_the_report_renders_every_section_and_the_checklist_names_them(document):
    page = render(document)
    assert page.startswith("<!doctype html>")
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in page
    for item, section in TRIPOD_AI:
        assert section in SECTIONS and item in page
    assert page.count('src="data:image/png;base64,') == 2  # calibration plot, decision curve
    assert f"Threshold <strong>{document['evidence']['threshold']['value']:g}</strong>" in page
    assert "synthetic" not in page.lower()
    warned = render(document | {"synthetic": True})
    assert "Trained on synthetic data" in warned


def test_the_report_states_the_model_cards_intended_use_and_limitations(document):
    page = render(document)  # the same text as the clinician page's (GET /features)
    for text in (INTENDED_USE, *LIMITATIONS):
        assert html.escape(text) in page
