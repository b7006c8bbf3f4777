"""Candidate models, each one sklearn Pipeline, declared in model_params.yaml."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline

from heart_mlops.errors import ConfigError
from heart_mlops.features import build_preprocessor

_SPACE_TYPES = {"int", "float", "categorical"}


@dataclass(frozen=True)
class Candidate:
    """One entry of model_params.yaml: an sklearn classifier by import path, its default
    `params`, its Optuna `search` space (parameter -> {type, low, high, ...} or {type,
    choices}) and an optional probability calibration."""

    name: str
    estimator: str
    params: dict[str, Any] = field(default_factory=dict)
    search: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: str | None = None  # "sigmoid" or "isotonic": calibrated probabilities

    def estimator_class(self):
        """The estimator's class, imported from `estimator` ("sklearn.svm.SVC"). ConfigError
        when the path is not under sklearn. or cannot be imported."""
        module_name, _, class_name = self.estimator.rpartition(".")
        if not module_name.startswith("sklearn."):
            raise ConfigError(
                f"candidate '{self.name}': estimator '{self.estimator}' is not allowed; "
                "use an import path under sklearn., e.g. sklearn.svm.SVC"
            )
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"candidate '{self.name}': cannot import estimator '{self.estimator}'"
            ) from exc

    def build(self, params: dict[str, Any] | None = None, *, seed: int) -> Pipeline:
        """The full pipeline (preprocessing + estimator) with `params` over the defaults.

        Estimators run single-threaded: parallelism is at the CV level, and serving one row
        must not pay for a worker pool."""
        cls = self.estimator_class()
        accepted = inspect.signature(cls).parameters
        merged = {**self.params, **(params or {})}
        unknown = sorted(set(merged) - set(accepted))
        if unknown:
            raise ConfigError(
                f"candidate '{self.name}': unknown parameter(s) {', '.join(unknown)} for "
                f"{self.estimator}"
            )
        if "random_state" in accepted:
            merged.setdefault("random_state", seed)
        try:
            estimator = cls(**merged)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"candidate '{self.name}': {exc}") from exc
        if self.calibration:
            estimator = CalibratedClassifierCV(estimator, method=self.calibration, ensemble=False)
        elif not hasattr(estimator, "predict_proba"):
            raise ConfigError(
                f"candidate '{self.name}': {self.estimator} has no predict_proba; "
                "add `calibration: sigmoid` to its entry"
            )
        return Pipeline([("preprocess", build_preprocessor()), ("model", estimator)])


def base_estimator(pipeline: Pipeline):
    """The fitted estimator of a candidate's pipeline, inside its calibration wrapper if any
    (the one fitted on every training row: `ensemble=False`)."""
    estimator = pipeline[-1]
    if isinstance(estimator, CalibratedClassifierCV):
        return estimator.calibrated_classifiers_[0].estimator
    return estimator


def load_candidates(path: Path) -> dict[str, Candidate]:
    """model_params.yaml (`candidates:` name -> entry) -> {name: Candidate}, in file order.
    ConfigError naming the file, candidate and key when the file is missing, not YAML, has no
    candidates, or an entry lacks `estimator` or has a bad search type or calibration."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"model parameters file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"model parameters file {path} is not valid YAML: {exc}") from exc
    entries = (document or {}).get("candidates")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{path}: needs a non-empty mapping 'candidates'")
    candidates = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or "estimator" not in entry:
            raise ConfigError(f"{path}: candidate '{name}' needs an 'estimator'")
        for param, space in (entry.get("search") or {}).items():
            if not isinstance(space, dict) or space.get("type") not in _SPACE_TYPES:
                raise ConfigError(
                    f"{path}: candidate '{name}', search '{param}': type must be one of "
                    f"{', '.join(sorted(_SPACE_TYPES))}"
                )
        calibration = entry.get("calibration")
        if calibration not in (None, "sigmoid", "isotonic"):
            raise ConfigError(
                f"{path}: candidate '{name}': calibration '{calibration}' is not "
                "one of sigmoid, isotonic"
            )
        candidates[name] = Candidate(
            name,
            entry["estimator"],
            dict(entry.get("params") or {}),
            dict(entry.get("search") or {}),
            calibration,
        )
    return candidates
