"""A serving runtime for a fitted sklearn pipeline: P(disease) from raw rows, without sklearn's
per-call overhead where an exact numpy equivalent is known.

Each step of the pipeline is compiled to a numpy function when its type is recognised, and
otherwise runs through its own sklearn method (exact by definition). `compile_pipeline` checks
the compiled runtime against the pipeline itself on probe rows and keeps plain sklearn if they
differ, so an unrecognised detail never changes a served probability.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from heart_mlops.data import FEATURE_SPECS
from heart_mlops.features import ClinicalInput

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], np.ndarray]
TREE_WALK_CHUNK_ROWS = 2048  # bounds the walk's (rows x trees) working arrays
PARITY_TOLERANCE = 1e-9


class NotCompilable(Exception):
    """A step (or detail of one) without an exact numpy equivalent here."""


@dataclass(frozen=True)
class Runtime:
    """P(disease) for rows of the 13 raw features (heart.csv codes, NaN = missing)."""

    predict_disease: Callable[[np.ndarray], np.ndarray]
    kind: str  # "compiled" or "sklearn", for /model/info and logs
    estimator_type: str

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self.predict_disease(rows)


def disease_column(estimator) -> int:
    """The column of class 1 (disease) in `estimator.predict_proba`'s output.

    Raises ValueError when the estimator's classes do not include 1."""
    classes = [float(c) for c in getattr(estimator, "classes_", [])]
    if 1.0 not in classes:
        raise ValueError(f"the model's classes {classes} do not include 1 (disease)")
    return classes.index(1.0)


def sklearn_runtime(pipeline: Pipeline) -> Runtime:
    """The pipeline's own predict_proba as a Runtime: rows (n, 13) -> P(disease), shape (n,).

    Raises ValueError as disease_column does."""
    column = disease_column(pipeline)
    return Runtime(
        lambda rows: pipeline.predict_proba(rows)[:, column], "sklearn", type(pipeline[-1]).__name__
    )


def compile_pipeline(pipeline: Pipeline) -> Runtime:
    """The fastest exact runtime for `pipeline`; plain sklearn when compiling is not exact."""
    _use_one_job(pipeline[-1])
    fallback = sklearn_runtime(pipeline)
    try:
        transforms = _compile_transforms(pipeline[:-1])
        predict_estimator = _compile_estimator(pipeline[-1])
    except NotCompilable as exc:
        log.info("serving with plain sklearn: %s", exc)
        return fallback

    def predict_disease(rows: np.ndarray) -> np.ndarray:
        matrix = rows
        for transform in transforms:
            matrix = transform(matrix)
        return predict_estimator(matrix)

    compiled = Runtime(predict_disease, "compiled", fallback.estimator_type)
    probe = probe_rows()
    difference = float(np.max(np.abs(compiled(probe) - fallback(probe))))
    if not difference <= PARITY_TOLERANCE:
        log.warning(
            "compiled runtime differs from sklearn by %.3g; serving with sklearn", difference
        )
        return fallback
    return compiled


def _use_one_job(estimator) -> None:
    """Serving answers many small requests: no process or thread pool per call."""
    for inner in (estimator, getattr(estimator, "estimator", None)):
        if inner is not None and "n_jobs" in inner.get_params(deep=False):
            inner.set_params(n_jobs=1)
    for calibrated in getattr(estimator, "calibrated_classifiers_", []):
        _use_one_job(calibrated.estimator)


def probe_rows(count: int = 256, seed: int = 0) -> np.ndarray:
    """Rows over the whole allowed range of every feature, with missing values and codes."""
    rng = np.random.default_rng(seed)
    columns = []
    for spec in FEATURE_SPECS:
        if spec.codes:
            values = rng.choice(np.array(spec.codes, dtype=float), count)
        else:
            values = rng.uniform(spec.low, spec.high, count).round(1)
        missing = rng.random(count) < 0.1
        values[missing] = np.nan
        if spec.missing_code is not None:
            values[rng.random(count) < 0.1] = spec.missing_code
        columns.append(values)
    return np.column_stack(columns)


# --- transformers -----------------------------------------------------------------------------


def _compile_transforms(steps) -> list[Transform]:
    transforms: list[Transform] = []
    for _, step in getattr(steps, "steps", []):
        if isinstance(step, Pipeline):
            transforms.extend(_compile_transforms(step))
        elif step is None or step == "passthrough":
            continue
        else:
            transforms.append(_compile_transformer(step))
    return transforms


def _compile_transformer(step) -> Transform:
    if isinstance(step, ClinicalInput):
        return step.transform  # already plain numpy
    if isinstance(step, SimpleImputer):
        return _compile_imputer(step)
    if isinstance(step, StandardScaler):
        return _compile_scaler(step)
    if isinstance(step, OneHotEncoder):
        return _compile_one_hot(step)
    if isinstance(step, ColumnTransformer):
        return _compile_column_transformer(step)
    raise NotCompilable(f"no compiled form of {type(step).__name__}")


def _compile_imputer(imputer: SimpleImputer) -> Transform:
    statistics = np.asarray(imputer.statistics_, dtype=float)
    if (
        imputer.add_indicator
        or not (isinstance(imputer.missing_values, float) and np.isnan(imputer.missing_values))
        or np.isnan(statistics).any()
    ):
        raise NotCompilable("SimpleImputer with indicator, non-NaN marker or empty column")

    def impute(matrix: np.ndarray) -> np.ndarray:
        missing = np.isnan(matrix)
        if not missing.any():
            return matrix
        return np.where(missing, statistics, matrix)

    return impute


def _compile_scaler(scaler: StandardScaler) -> Transform:
    mean = scaler.mean_ if scaler.with_mean else None
    scale = scaler.scale_ if scaler.with_std else None

    def standardize(matrix: np.ndarray) -> np.ndarray:
        if mean is not None:
            matrix = matrix - mean
        if scale is not None:
            matrix = matrix / scale
        return matrix

    return standardize


def _compile_one_hot(encoder: OneHotEncoder) -> Transform:
    if (
        encoder.drop_idx_ is not None
        or encoder.handle_unknown != "ignore"
        or getattr(encoder, "_infrequent_enabled", False)
    ):
        raise NotCompilable("OneHotEncoder with drop, infrequent categories or errors on unknown")
    categories = [np.asarray(c, dtype=float) for c in encoder.categories_]

    def one_hot(matrix: np.ndarray) -> np.ndarray:
        # unknown codes give all zeros, as handle_unknown="ignore" does
        return np.hstack(
            [(matrix[:, [i]] == codes).astype(float) for i, codes in enumerate(categories)]
        )

    return one_hot


def _compile_column_transformer(columns: ColumnTransformer) -> Transform:
    parts: list[tuple[np.ndarray, list[Transform]]] = []
    for _, transformer, selection in columns.transformers_:
        try:
            indices = np.arange(columns.n_features_in_)[selection]
        except (IndexError, TypeError):
            raise NotCompilable("ColumnTransformer selecting columns by name") from None
        if transformer == "drop" or len(indices) == 0:
            continue
        if transformer == "passthrough":
            parts.append((indices, []))
        elif isinstance(transformer, Pipeline):
            parts.append((indices, _compile_transforms(transformer)))
        else:
            parts.append((indices, [_compile_transformer(transformer)]))

    def transform(matrix: np.ndarray) -> np.ndarray:
        outputs = []
        for indices, transforms in parts:
            part = matrix[:, indices]
            for step in transforms:
                part = step(part)
            outputs.append(part)
        return np.hstack(outputs)

    return transform


# --- estimators -------------------------------------------------------------------------------


def _compile_estimator(estimator) -> Callable[[np.ndarray], np.ndarray]:
    column = disease_column(estimator)
    if len(estimator.classes_) != 2:
        raise NotCompilable("not a binary classifier")
    if isinstance(estimator, RandomForestClassifier | ExtraTreesClassifier):
        return _compile_forest(estimator)
    if isinstance(estimator, LogisticRegression):
        coef, intercept = estimator.coef_[0], float(estimator.intercept_[0])
        return lambda matrix: expit(matrix @ coef + intercept)
    if isinstance(estimator, CalibratedClassifierCV):
        return _compile_calibrated(estimator)
    log.info("no compiled form of %s: its own predict_proba serves", type(estimator).__name__)
    return lambda matrix: estimator.predict_proba(matrix)[:, column]


def _compile_forest(forest) -> Callable[[np.ndarray], np.ndarray]:
    """All trees packed into flat node arrays, walked together for every row."""
    if forest.n_outputs_ != 1:
        raise NotCompilable("multi-output forest")
    left, right, feature, threshold, disease, roots = [], [], [], [], [], []
    offset, depth = 0, 0
    for tree in (t.tree_ for t in forest.estimators_):
        is_leaf = tree.children_left < 0
        own = np.arange(tree.node_count) + offset
        # leaves point to themselves, so extra steps past a leaf stay on it
        left.append(np.where(is_leaf, own, tree.children_left + offset))
        right.append(np.where(is_leaf, own, tree.children_right + offset))
        feature.append(np.where(is_leaf, 0, tree.feature))
        threshold.append(tree.threshold)
        counts = tree.value[:, 0, :]
        totals = counts.sum(axis=1)
        disease.append(counts[:, 1] / np.where(totals == 0, 1.0, totals))
        roots.append(offset)
        offset += tree.node_count
        depth = max(depth, tree.max_depth)
    left, right = np.concatenate(left), np.concatenate(right)
    feature, threshold = np.concatenate(feature), np.concatenate(threshold)
    disease, roots = np.concatenate(disease), np.array(roots)
    n_trees = len(roots)

    def walk(matrix: np.ndarray) -> np.ndarray:
        # sklearn compares float32 inputs against float64 thresholds
        values = matrix.astype(np.float32).astype(np.float64)
        rows = np.arange(len(values))[:, None]
        node = np.broadcast_to(roots, (len(values), n_trees))
        for _ in range(depth):
            go_left = values[rows, feature[node]] <= threshold[node]
            node = np.where(go_left, left[node], right[node])
        return disease[node].sum(axis=1) / n_trees

    def predict(matrix: np.ndarray) -> np.ndarray:
        if np.isnan(matrix).any():  # sklearn's own rules for missing values in trees
            return forest.predict_proba(matrix)[:, 1]
        if len(matrix) <= TREE_WALK_CHUNK_ROWS:
            return walk(matrix)
        return np.concatenate(
            [
                walk(matrix[start : start + TREE_WALK_CHUNK_ROWS])
                for start in range(0, len(matrix), TREE_WALK_CHUNK_ROWS)
            ]
        )

    return predict


def _compile_calibrated(calibrated: CalibratedClassifierCV) -> Callable[[np.ndarray], np.ndarray]:
    members = []
    for member in calibrated.calibrated_classifiers_:
        if member.method != "sigmoid" or len(member.calibrators) != 1:
            raise NotCompilable(f"calibration method {member.method}")
        decision = _compile_decision_function(member.estimator)
        members.append((decision, float(member.calibrators[0].a_), float(member.calibrators[0].b_)))

    def predict(matrix: np.ndarray) -> np.ndarray:
        total = np.zeros(len(matrix))
        for decision, a, b in members:
            total += expit(-(a * decision(matrix) + b))
        return total / len(members)

    return predict


def _compile_decision_function(estimator) -> Callable[[np.ndarray], np.ndarray]:
    if (
        isinstance(estimator, SVC)
        and estimator.kernel in ("rbf", "linear")
        and not (hasattr(estimator, "_sparse") and estimator._sparse)
    ):
        vectors = estimator.support_vectors_
        weights, intercept = estimator.dual_coef_[0], float(estimator.intercept_[0])
        if estimator.kernel == "linear":
            coef = weights @ vectors
            return lambda matrix: matrix @ coef + intercept
        gamma = float(estimator._gamma)
        vector_norms = np.einsum("ij,ij->i", vectors, vectors)

        def rbf(matrix: np.ndarray) -> np.ndarray:
            distances = (
                np.einsum("ij,ij->i", matrix, matrix)[:, None]
                + vector_norms
                - 2.0 * matrix @ vectors.T
            )
            return np.exp(-gamma * np.maximum(distances, 0.0)) @ weights + intercept

        return rbf
    if isinstance(estimator, LogisticRegression) and len(estimator.classes_) == 2:
        coef, intercept = estimator.coef_[0], float(estimator.intercept_[0])
        return lambda matrix: matrix @ coef + intercept
    if hasattr(estimator, "decision_function"):
        return estimator.decision_function
    raise NotCompilable(f"calibrated {type(estimator).__name__} without decision_function")
