"""Why this prediction: each of the 13 raw features' contribution to one patient's answer.

An `Explainer` is built once per served version from its scikit-learn pipeline and the training
rows stored with it (registry.REFERENCE_ARTIFACT). The method follows the model so that the
base value plus the contributions equals the explained model's output in the stated units:

- `linear` (log-odds, exact): a linear model (logistic regression, an SVC with a linear kernel),
  alone or inside a sigmoid calibration, which is affine in log-odds. Each preprocessed column's
  coefficient times its distance from the training mean, summed back to its raw feature; the base
  value is the log-odds at the training mean.
- `tree_shap` (exact): a tree ensemble shap's TreeExplainer reads (a random forest), by
  path-dependent TreeSHAP on the preprocessed row, summed back to raw features: in probability
  units for the forest alone (it averages probabilities), in log-odds inside a sigmoid
  calibration (the calibration's affine map applied to the exact values).
- `permutation_shap` (any other model: an RBF SVM, isotonic calibration): Shapley values
  estimated by shap's permutation method over the 13 raw features against a fixed sample of
  training rows, within a fixed budget of model evaluations, in probability units. Each
  permutation telescopes, so they add up exactly; each value is an estimate.

Every exact method checks itself on training rows when built; a model it does not fit exactly
falls through to the next method. Reference: Lundberg et al., "From local explanations to
global understanding with explainable AI for trees", Nature Machine Intelligence 2, 2020.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV

from heart_mlops.data import FEATURES, disease_column
from heart_mlops.errors import ExplanationError
from heart_mlops.features import transformed_feature_names

LOG_ODDS, PROBABILITY = "log_odds", "probability"
SELF_CHECK_TOLERANCE = 1e-9  # an exact method's sum against the model's own output
SELF_CHECK_ROWS = 64
# shap's maskers blend rows arithmetically (x * mask + background * ~mask), which NaN breaks:
# a missing value travels through them as this finite stand-in
_MISSING = -1e9


@dataclass(frozen=True)
class Decomposition:
    """Rows (n, 13) -> (base value (n,), contributions (n, 13)) in `units`, adding up to the
    model's output (log-odds of P(disease), or P(disease))."""

    method: str
    units: str
    detail: str
    decompose: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class Explainer:
    """Explanations of one fitted pipeline (a candidate of models.py), built once.

    `pipeline`: the fitted Pipeline (preprocess, model); `reference`: the training rows it was
    fitted on, (m, 13) float64 in FEATURES order, NaN = missing; `background_rows` and
    `permutations`: the sample and budget of the model-agnostic method; `seed` fixes both;
    `served`: P(disease) (n,) of raw rows (n, 13) as served (another runtime of the same
    model), which the model-agnostic method explains instead of the pipeline's own.
    ExplanationError when there are no reference rows.
    """

    def __init__(
        self,
        pipeline,
        reference: np.ndarray,
        *,
        background_rows: int = 50,
        permutations: int = 10,
        seed: int = 42,
        served: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        if reference.ndim != 2 or reference.shape[1] != len(FEATURES) or not len(reference):
            raise ExplanationError("the version has no training rows to explain against")
        self.pipeline = pipeline
        self._column = disease_column(pipeline)
        self.fill_values = _fill_values(pipeline)
        checks = reference[np.random.default_rng(seed).permutation(len(reference))]
        checks = checks[:SELF_CHECK_ROWS]
        expected = self.probability(checks)  # what an exact method must add up to
        self.decomposition = _linear(pipeline, reference, checks, expected) or _tree(
            pipeline, checks, expected
        )
        if self.decomposition is None:
            self.decomposition = _permutation(
                served or self.probability, reference, background_rows, permutations, seed
            )

    @property
    def method(self) -> str:
        return self.decomposition.method

    @property
    def units(self) -> str:
        return self.decomposition.units

    def probability(self, rows: np.ndarray) -> np.ndarray:
        """The explained model's P(disease) (n,) for raw rows (n, 13)."""
        return self.pipeline.predict_proba(rows)[:, self._column]

    def explain(self, rows: np.ndarray) -> list[dict]:
        """Rows (n, 13) float64 of raw features (heart.csv codes, NaN = missing) -> one
        explanation per row: {method, units, base_value, detail, contributions: [{feature,
        value (as used: the imputed value where missing), missing, contribution}, ...] ordered
        by |contribution|, largest first}."""
        clinical = self.pipeline[0][0].transform(rows)  # missing codes -> NaN
        missing = np.isnan(clinical)
        used = np.where(missing, self.fill_values, clinical)
        base, contributions = self.decomposition.decompose(rows)
        answers = []
        for i in range(len(rows)):
            order = np.argsort(-np.abs(contributions[i]), kind="stable")
            answers.append(
                {
                    "method": self.method,
                    "units": self.units,
                    "base_value": float(base[i]),
                    "detail": self.decomposition.detail,
                    "contributions": [
                        {
                            "feature": FEATURES[j],
                            "value": float(used[i, j]),
                            "missing": bool(missing[i, j]),
                            "contribution": float(contributions[i, j]),
                        }
                        for j in order
                    ],
                }
            )
        return answers


def implied_probability(explanation: dict) -> float:
    """P(disease) an explanation adds up to: base value plus contributions, through the
    logistic function when in log-odds."""
    total = explanation["base_value"] + sum(c["contribution"] for c in explanation["contributions"])
    return float(expit(total)) if explanation["units"] == LOG_ODDS else float(total)


def _fill_values(pipeline) -> np.ndarray:
    """(13,) the value the pipeline's imputers put in each raw feature when it is missing."""
    columns = pipeline[0]["columns"]
    fill = np.full(len(FEATURES), np.nan)
    for name, transformer, indices in columns.transformers_:
        if name in columns.named_transformers_ and hasattr(transformer, "named_steps"):
            fill[indices] = transformer.named_steps["impute"].statistics_
    return fill


def _to_raw_features() -> np.ndarray:
    """(k, 13) 0/1: which raw feature each preprocessed column comes from."""
    names = transformed_feature_names()
    matrix = np.zeros((len(names), len(FEATURES)))
    for i, name in enumerate(names):
        matrix[i, FEATURES.index(name.split("=")[0])] = 1.0
    return matrix


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if sparse.issparse(matrix) else matrix, dtype=float)


def _calibration(estimator) -> tuple[object, float, float] | None:
    """(fitted base estimator, a, b) such that log-odds of P(disease) = a * f + b, where f is
    the base estimator's decision function (or its P(disease) when it has none); None when
    the output is not affine in log-odds (isotonic, an ensemble of calibrations)."""
    if not isinstance(estimator, CalibratedClassifierCV):
        return estimator, 1.0, 0.0
    calibrated = estimator.calibrated_classifiers_
    if estimator.method != "sigmoid" or len(calibrated) != 1:
        return None
    (calibrator,) = calibrated[0].calibrators
    return calibrated[0].estimator, -float(calibrator.a_), -float(calibrator.b_)


def _checked(
    decomposition: Decomposition, checks: np.ndarray, expected: np.ndarray
) -> Decomposition | None:
    """The decomposition if it adds up to the pipeline's P(disease) `expected` on the check
    rows."""
    base, contributions = decomposition.decompose(checks)
    total = base + contributions.sum(axis=1)
    got = expit(total) if decomposition.units == LOG_ODDS else total
    return decomposition if np.max(np.abs(got - expected)) <= SELF_CHECK_TOLERANCE else None


def _linear(
    pipeline, reference: np.ndarray, checks: np.ndarray, expected: np.ndarray
) -> Decomposition | None:
    """Exact log-odds of a linear model, against the training mean of its columns."""
    calibration = _calibration(pipeline[-1])
    if calibration is None:
        return None
    estimator, a, b = calibration
    coef = getattr(estimator, "coef_", None)
    if coef is None or np.ndim(coef) != 2 or coef.shape[0] != 1:
        return None
    preprocess, to_raw = pipeline[0], _to_raw_features()
    weights = a * coef.ravel()
    mean = _dense(preprocess.transform(reference)).mean(axis=0)
    base_value = float(weights @ mean + a * float(np.ravel(estimator.intercept_)[0]) + b)

    def decompose(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = _dense(preprocess.transform(rows))
        return np.full(len(rows), base_value), ((z - mean) * weights) @ to_raw

    detail = (
        "exact: each feature's coefficients times its distance from the training mean, "
        "in log-odds; the base value is the log-odds at the training mean"
    )
    return _checked(Decomposition("linear", LOG_ODDS, detail, decompose), checks, expected)


def _tree(pipeline, checks: np.ndarray, expected: np.ndarray) -> Decomposition | None:
    """Exact path-dependent TreeSHAP of a tree ensemble (probability, or log-odds inside a
    sigmoid calibration of its probability)."""
    calibration = _calibration(pipeline[-1])
    if calibration is None:
        return None
    estimator, a, b = calibration
    if not hasattr(estimator, "estimators_") or not hasattr(estimator, "predict_proba"):
        return None
    import shap  # seconds to import: only when a forest is explained

    try:
        explainer = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent")
    except Exception:  # a model shap's TreeExplainer does not read
        return None
    column = disease_column(estimator)
    preprocess, to_raw = pipeline[0], _to_raw_features()
    base_value = float(np.ravel(explainer.expected_value)[column])
    calibrated = isinstance(pipeline[-1], CalibratedClassifierCV)

    def decompose(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the forest compares float32 features with its thresholds: so must TreeSHAP
        z = _dense(preprocess.transform(rows)).astype(np.float32).astype(np.float64)
        values = np.asarray(explainer.shap_values(z, check_additivity=False))
        values = values[..., column] if values.ndim == 3 else values
        if calibrated:
            return np.full(len(rows), a * base_value + b), a * values @ to_raw
        return np.full(len(rows), base_value), values @ to_raw

    units = LOG_ODDS if calibrated else PROBABILITY
    detail = "exact: path-dependent TreeSHAP of the forest" + (
        ", through the sigmoid calibration's affine map, in log-odds" if calibrated else ""
    )
    return _checked(Decomposition("tree_shap", units, detail, decompose), checks, expected)


def _permutation(
    probability: Callable[[np.ndarray], np.ndarray],
    reference: np.ndarray,
    background_rows: int,
    permutations: int,
    seed: int,
) -> Decomposition:
    """Shapley values of P(disease) over the 13 raw features estimated by shap's permutation
    method against `background_rows` training rows, `permutations` antithetic permutations."""
    import shap

    rng = np.random.default_rng(seed)
    background = reference[rng.permutation(len(reference))[:background_rows]]
    evaluations = permutations * (2 * len(FEATURES) + 1)

    def model(encoded: np.ndarray) -> np.ndarray:
        return probability(np.where(encoded == _MISSING, np.nan, encoded))

    masker = shap.maskers.Independent(np.nan_to_num(background, nan=_MISSING), len(background))
    explainer = shap.PermutationExplainer(model, masker, seed=seed)
    lock = threading.Lock()  # shap draws its permutations from numpy's global generator

    def decompose(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        encoded = np.nan_to_num(np.asarray(rows, dtype=float), nan=_MISSING)
        with lock:
            np.random.seed(seed)  # the same patient, the same explanation
            result = explainer(encoded, max_evals=evaluations, batch_size=evaluations, silent=True)
        return np.asarray(result.base_values, dtype=float), np.asarray(result.values, dtype=float)

    detail = (
        f"estimated: Shapley values by shap's permutation method, {permutations} antithetic "
        f"permutations ({evaluations} evaluations) against {len(background)} training rows; "
        "they add up exactly, each value is an estimate"
    )
    return Decomposition("permutation_shap", PROBABILITY, detail, decompose)


def reference_rows(frame: pd.DataFrame) -> np.ndarray:
    """The 13 FEATURES columns of a training frame as float64 (m, 13), NaN = missing."""
    return frame.loc[:, list(FEATURES)].to_numpy(dtype=float)
