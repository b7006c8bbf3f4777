"""Optuna search over a candidate's search space; each trial is a nested MLflow run."""

from __future__ import annotations

import logging

import mlflow
import optuna
import pandas as pd

from heart_mlops.evaluation import cv_score
from heart_mlops.models import Candidate
from heart_mlops.settings import Settings

log = logging.getLogger(__name__)


def suggest(trial: optuna.Trial, search: dict[str, dict]) -> dict:
    params = {}
    for name, space in search.items():
        kind = space["type"]
        if kind == "int":
            params[name] = trial.suggest_int(name, space["low"], space["high"],
                                             step=space.get("step", 1),
                                             log=space.get("log", False))
        elif kind == "float":
            params[name] = trial.suggest_float(name, space["low"], space["high"],
                                               log=space.get("log", False))
        else:
            params[name] = trial.suggest_categorical(name, space["choices"])
    return params


def search(candidate: Candidate, train: pd.DataFrame, settings: Settings, *, trials: int,
           metric: str) -> tuple[dict, float]:
    """Best parameters by mean CV `metric` on the training part. Needs an active MLflow run.

    Each trial runs `tuning_cv_repeats` repeats of k-fold CV (one by default: the search only
    ranks trials; the caller re-scores its pick against the untuned model on fresh folds).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, candidate.search)
        model = candidate.build(params, seed=settings.seed)
        score = cv_score(model, train, metric, folds=settings.cv_folds,
                         repeats=settings.tuning_cv_repeats, seed=settings.seed,
                         n_jobs=settings.n_jobs)
        with mlflow.start_run(run_name=f"trial_{trial.number}", nested=True):
            mlflow.log_params(params)
            mlflow.log_metric(f"cv_{metric}_mean", score)
        return score

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=settings.seed))
    study.optimize(objective, n_trials=trials)
    log.info("tuning %s: best cv_%s %.4f with %s", candidate.name, metric, study.best_value,
             study.best_params)
    return study.best_params, study.best_value
