"""Holdout split, cross-validation, metrics, importances, plots and the model card."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from heart_mlops.data import LABEL
from heart_mlops.evaluation import (
    classification_metrics,
    cross_validated,
    cv_score,
    feature_importances,
    holdout_metrics,
    save_plots,
    split_holdout,
    xy,
)
from heart_mlops.features import transformed_feature_names
from heart_mlops.models import base_estimator
from tests.support import fitted_candidate, heart_dataset, heart_split

METRICS = ("roc_auc", "accuracy", "precision", "recall", "f1", "brier", "log_loss")
CV = {"folds": 3, "repeats": 2, "seed": 42, "n_jobs": 1}


@pytest.fixture(scope="module")
def split():
    return heart_split()


@pytest.fixture(scope="module")
def logistic(split):
    return fitted_candidate("logistic_regression", split[0])


# --- classification_metrics on four patients, worked by hand -----------------------------------
Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.6, 0.4, 0.9])


def test_classification_metrics_of_four_patients():
    scores = classification_metrics(Y, P, threshold=0.5)  # predicted 0, 1, 0, 1
    assert scores == pytest.approx(
        {
            "roc_auc": 0.75,  # 3 of the 4 (disease, no disease) pairs ordered right
            "accuracy": 0.5,
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "brier": (0.1**2 + 0.6**2 + 0.6**2 + 0.1**2) / 4,
            "log_loss": -(2 * math.log(0.9) + 2 * math.log(0.4)) / 4,
        }
    )


def test_classification_metrics_follow_the_threshold():
    scores = classification_metrics(Y, P, threshold=0.4)  # predicted 0, 1, 1, 1
    assert scores["accuracy"] == 0.75
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == 1.0
    assert scores["f1"] == pytest.approx(0.8)
    assert scores["roc_auc"] == 0.75  # the ranking does not depend on the threshold


def test_probability_at_the_threshold_counts_as_disease():
    assert classification_metrics(np.array([0, 1]), np.array([0.2, 0.5]), 0.5)["accuracy"] == 1.0


def test_one_class_only_gives_no_roc_auc_but_the_other_metrics():
    scores = classification_metrics(np.array([1, 1, 1]), np.array([0.9, 0.8, 0.3]), 0.5)
    assert math.isnan(scores["roc_auc"])
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["precision"] == 1.0
    assert math.isfinite(scores["log_loss"])


# --- split_holdout --------------------------------------------------------------------------
def test_holdout_split_is_a_seeded_partition():
    frame = heart_dataset().frame
    train, holdout = split_holdout(frame, 0.2, seed=42, cv_folds=5)
    assert (len(train), len(holdout)) == (241, 61)
    assert set(train.index).isdisjoint(holdout.index)
    assert set(train.index) | set(holdout.index) == set(frame.index)
    again_train, again_holdout = split_holdout(frame, 0.2, seed=42, cv_folds=5)
    assert list(again_holdout.index) == list(holdout.index)
    assert list(again_train.index) == list(train.index)
    assert set(split_holdout(frame, 0.2, seed=7, cv_folds=5)[1].index) != set(holdout.index)


@pytest.mark.parametrize("seed", [0, 42, 2024])
def test_holdout_split_keeps_the_share_of_patients_with_disease(seed):
    frame = heart_dataset().frame
    train, holdout = split_holdout(frame, 0.2, seed=seed, cv_folds=5)
    share = frame[LABEL].mean()
    assert abs(holdout[LABEL].mean() - share) < 1 / len(holdout)
    assert abs(train[LABEL].mean() - share) < 1 / len(train)


# --- cross-validation -----------------------------------------------------------------------
def test_cross_validated_gives_mean_and_std_of_every_metric(split, logistic):
    cv = cross_validated(logistic, split[0], **CV)
    scores = cv.scores
    assert set(scores) == {f"cv_{m}_{s}" for m in METRICS for s in ("mean", "std")} | {
        "cv_calibration_slope",
        "cv_calibration_intercept",
    }
    assert 0.85 < scores["cv_roc_auc_mean"] < 0.97
    # losses are reported as losses (sklearn's negated scorers undone)
    assert 0 < scores["cv_brier_mean"] < 0.25
    assert 0 < scores["cv_log_loss_mean"] < 0.693  # better than P = 0.5 for everyone
    assert all(scores[f"cv_{m}_std"] > 0 for m in METRICS)
    # every patient predicted once per repeat, by a model that never saw them
    assert cv.oof.shape == (CV["repeats"], len(split[0])) and not np.isnan(cv.oof).any()
    for metric in METRICS:
        assert np.mean(cv.fold_scores[metric]) == pytest.approx(scores[f"cv_{metric}_mean"])


def test_cross_validated_is_reproducible_for_a_seed(split, logistic):
    first = cross_validated(logistic, split[0], **CV)
    again = cross_validated(logistic, split[0], **CV)
    assert again.scores == first.scores
    np.testing.assert_array_equal(again.oof, first.oof)
    other = cross_validated(logistic, split[0], **{**CV, "seed": 43})
    assert other.scores["cv_roc_auc_mean"] != first.scores["cv_roc_auc_mean"]


def test_cv_score_is_the_mean_that_cross_validated_reports(split, logistic):
    scores = cross_validated(logistic, split[0], **CV).scores
    for metric in ("roc_auc", "f1", "log_loss"):
        assert cv_score(logistic, split[0], metric, **CV) == pytest.approx(
            scores[f"cv_{metric}_mean"], abs=1e-12
        )


# --- holdout --------------------------------------------------------------------------------
def test_holdout_metrics_score_p_disease_on_the_holdout(split, logistic):
    holdout = split[1]
    scores = holdout_metrics(logistic, holdout, 0.5)
    assert set(scores) == {f"holdout_{m}" for m in METRICS} | {
        "holdout_calibration_slope",
        "holdout_calibration_intercept",
    }
    X, y = xy(holdout)
    p_disease = logistic.predict_proba(X)[:, 1]
    assert scores["holdout_roc_auc"] == pytest.approx(roc_auc_score(y, p_disease))
    assert scores["holdout_roc_auc"] > 0.8
    assert scores["holdout_accuracy"] == pytest.approx(np.mean((p_disease >= 0.5) == y))


def test_holdout_metrics_use_the_threshold(split, logistic):
    everyone_sick = holdout_metrics(logistic, split[1], 1e-9)
    assert everyone_sick["holdout_recall"] == 1.0
    assert everyone_sick["holdout_precision"] == pytest.approx(split[1][LABEL].mean())


# --- importances and plots ------------------------------------------------------------------
def test_forest_importances_are_named_by_the_estimators_columns(split):
    forest = fitted_candidate("random_forest", split[0], {"n_estimators": 20})
    importances = feature_importances(forest)
    assert list(importances.index) == transformed_feature_names()
    assert importances.sum() == pytest.approx(1.0)
    assert (importances >= 0).all()
    np.testing.assert_array_equal(
        importances.to_numpy(), base_estimator(forest).feature_importances_
    )


def test_logistic_regression_gives_its_coefficients(logistic):
    coefficients = feature_importances(logistic)
    assert list(coefficients.index) == transformed_feature_names()
    np.testing.assert_array_equal(coefficients.to_numpy(), base_estimator(logistic).coef_.ravel())
    assert (coefficients < 0).any() and (coefficients > 0).any()


def test_calibrated_svm_has_no_importances(split):
    assert feature_importances(fitted_candidate("svm", split[0])) is None


def test_plots_are_png_files_with_importances_only_where_there_are_any(split, logistic, tmp_path):
    names = {path.name for path in save_plots(logistic, split[1], 0.5, tmp_path / "lr")}
    assert names == {
        "roc_curve.png",
        "confusion_matrix.png",
        "calibration_curve.png",
        "feature_importance.png",
    }
    for path in (tmp_path / "lr").iterdir():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svm = fitted_candidate("svm", split[0])
    assert "feature_importance.png" not in {
        path.name for path in save_plots(svm, split[1], 0.5, tmp_path / "svm")
    }
