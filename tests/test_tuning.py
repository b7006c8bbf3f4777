"""Search spaces to Optuna, the search itself, and the choice of tuned or untuned."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial
from sklearn.calibration import CalibratedClassifierCV

from heart_mlops.evaluation import cv_score
from heart_mlops.models import load_candidates
from heart_mlops.settings import Settings
from heart_mlops.tuning import choose, search, suggest
from tests.conftest import fast_settings
from tests.support import heart_split

SPACE = {
    "n_estimators": {"type": "int", "low": 100, "high": 500, "step": 50},
    "max_leaf_nodes": {"type": "int", "low": 2, "high": 64, "log": True},
    "C": {"type": "float", "low": 0.001, "high": 100.0, "log": True},
    "tol": {"type": "float", "low": 0.0, "high": 0.5},
    "class_weight": {"type": "categorical", "choices": [None, "balanced"]},
}
FIXED = {"n_estimators": 150, "max_leaf_nodes": 8, "C": 0.01, "tol": 0.25, "class_weight": None}


def test_suggest_asks_each_parameter_from_its_space():
    trial = FixedTrial(FIXED)
    assert suggest(trial, SPACE) == FIXED
    assert trial.distributions == {
        "n_estimators": IntDistribution(100, 500, step=50),
        "max_leaf_nodes": IntDistribution(2, 64, log=True),
        "C": FloatDistribution(0.001, 100.0, log=True),
        "tol": FloatDistribution(0.0, 0.5),
        "class_weight": CategoricalDistribution([None, "balanced"]),
    }


def test_suggest_of_an_empty_space_is_no_parameters():
    assert suggest(FixedTrial({}), {}) == {}


@pytest.mark.parametrize("name", ["random_forest", "logistic_regression", "svm"])
def test_every_declared_space_gives_parameters_its_estimator_accepts(name):
    candidate = load_candidates(Settings().model_params_path)[name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = suggest(study.ask(), candidate.search)
        assert set(params) == set(candidate.search)
        estimator = candidate.build(params, seed=0)[-1]
        if isinstance(estimator, CalibratedClassifierCV):
            estimator = estimator.estimator
        assert {key: estimator.get_params()[key] for key in params} == params


# --- choose ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tuned, expected",
    [
        (0.91, "tuned"),  # strictly better
        (0.90, "untuned"),  # a tie keeps the defaults
        (0.89, "untuned"),
        (None, "untuned"),  # no search
    ],
)
def test_choose_takes_the_tuned_parameters_only_when_strictly_better(tuned, expected):
    untuned = {"cv_roc_auc_mean": 0.90, "cv_roc_auc_std": 0.01}
    tuned_cv = None if tuned is None else {"cv_roc_auc_mean": tuned, "cv_roc_auc_std": 0.05}
    assert choose(untuned, tuned_cv, "roc_auc") == expected


def test_choose_compares_the_selection_metric():
    untuned = {"cv_roc_auc_mean": 0.90, "cv_f1_mean": 0.80}
    tuned = {"cv_roc_auc_mean": 0.85, "cv_f1_mean": 0.82}
    assert choose(untuned, tuned, "f1") == "tuned"
    assert choose(untuned, tuned, "roc_auc") == "untuned"


# --- search ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train():
    return heart_split()[0]


@pytest.fixture(scope="module")
def candidate():
    return load_candidates(Settings().model_params_path)["logistic_regression"]


def recorded_search(candidate, train, settings, trials=3):
    calls = []
    best = search(
        candidate,
        train,
        settings,
        trials=trials,
        metric="roc_auc",
        on_trial=lambda *call: calls.append(call),
    )
    return best, calls


def test_search_reports_each_trial_with_its_cv_score(candidate, train, tmp_path):
    settings = fast_settings(tmp_path, n_jobs=1)
    (params, best), calls = recorded_search(candidate, train, settings)
    assert [number for number, *_ in calls] == [0, 1, 2]
    assert {metric for _, _, metric, _ in calls} == {"roc_auc"}
    for _, trial_params, _, score in calls:
        assert set(trial_params) == {"C", "class_weight"}
        assert 0.001 <= trial_params["C"] <= 100
        model = candidate.build(trial_params, seed=settings.seed)
        assert score == pytest.approx(
            cv_score(
                model,
                train,
                "roc_auc",
                folds=settings.cv_folds,
                repeats=settings.tuning_cv_repeats,
                seed=settings.seed,
                n_jobs=1,
            ),
            abs=1e-12,
        )
    best_call = max(calls, key=lambda call: call[3])
    assert (params, best) == (best_call[1], best_call[3])


def test_search_is_reproducible_for_a_seed(candidate, train, tmp_path):
    first = recorded_search(candidate, train, fast_settings(tmp_path, n_jobs=1))
    assert recorded_search(candidate, train, fast_settings(tmp_path, n_jobs=1)) == first
    other = recorded_search(candidate, train, fast_settings(tmp_path, n_jobs=1, seed=7))
    assert [call[1] for call in other[1]] != [call[1] for call in first[1]]


def test_search_without_a_callback_returns_the_best(candidate, train, tmp_path):
    settings = fast_settings(tmp_path, n_jobs=1)
    assert (
        search(candidate, train, settings, trials=3, metric="roc_auc")
        == recorded_search(candidate, train, settings)[0]
    )
