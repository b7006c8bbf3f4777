"""Optuna search over a candidate's search space, and the choice of tuned or untuned.

MLflow stays out: the caller passes `on_trial` (the pipeline logs each trial as a nested run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import optuna
import pandas as pd

from heart_mlops.evaluation import LOWER_IS_BETTER, cv_score, oriented
from heart_mlops.models import Candidate
from heart_mlops.settings import Settings

log = logging.getLogger(__name__)


TrialCallback = Callable[[int, dict, str, float], None]  # (number, params, metric, score)


def suggest(trial: optuna.Trial, search: dict[str, dict]) -> dict:
    """Parameters for one trial from a model_params.yaml search space.

    `search`: name -> {"type": "int"|"float", "low", "high", ["step"], ["log"]} or
    {"type": "categorical", "choices": [...]}."""
    params = {}
    for name, space in search.items():
        kind = space["type"]
        if kind == "int":
            params[name] = trial.suggest_int(
                name,
                space["low"],
                space["high"],
                step=space.get("step", 1),
                log=space.get("log", False),
            )
        elif kind == "float":
            params[name] = trial.suggest_float(
                name, space["low"], space["high"], log=space.get("log", False)
            )
        else:
            params[name] = trial.suggest_categorical(name, space["choices"])
    return params


def search(
    candidate: Candidate,
    train: pd.DataFrame,
    settings: Settings,
    *,
    trials: int,
    metric: str,
    on_trial: TrialCallback | None = None,
) -> tuple[dict, float]:
    """Best parameters by mean CV `metric` on the training part (lowest for a loss).
    -> (params, best score)

    Each trial runs `tuning_cv_repeats` repeats of k-fold CV (one by default: the search only
    ranks trials; the caller re-scores its pick against the untuned model on fresh folds).
    `on_trial(number, params, metric, score)` is called after each trial.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, candidate.search)
        model = candidate.build(params, seed=settings.seed)
        score = cv_score(
            model,
            train,
            metric,
            folds=settings.cv_folds,
            repeats=settings.tuning_cv_repeats,
            seed=settings.seed,
            n_jobs=settings.n_jobs,
        )
        if on_trial:
            on_trial(trial.number, params, metric, score)
        return score

    study = optuna.create_study(
        direction="minimize" if metric in LOWER_IS_BETTER else "maximize",
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
    )
    study.optimize(objective, n_trials=trials)
    log.info(
        "tuning %s: best cv_%s %.4f with %s",
        candidate.name,
        metric,
        study.best_value,
        study.best_params,
    )
    return study.best_params, study.best_value


def choose(untuned_cv: dict[str, float], tuned_cv: dict[str, float] | None, metric: str) -> str:
    """ "tuned" if the tuned parameters' mean CV `metric` beats the untuned one's (lower for a
    loss), else "untuned" (also when there was no search: `tuned_cv` None). Ties keep the
    defaults."""
    if tuned_cv is None:
        return "untuned"
    key = f"cv_{metric}_mean"
    better = oriented(metric, tuned_cv[key]) > oriented(metric, untuned_cv[key])
    return "tuned" if better else "untuned"
