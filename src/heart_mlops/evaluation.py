"""Holdout split, cross-validation, metrics, plots and the model card."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import special, stats  # noqa: E402
from sklearn import metrics  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    RepeatedStratifiedKFold,
    cross_validate,
    train_test_split,
)

from heart_mlops.data import (  # noqa: E402
    FEATURES,
    LABEL,
    require_features,
    require_trainable,
)
from heart_mlops.features import transformed_feature_names  # noqa: E402
from heart_mlops.models import base_estimator  # noqa: E402

# sklearn scorer per reported metric; loss scorers are negated by sklearn, undone below
CV_SCORERS = {
    "roc_auc": "roc_auc",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "f1",
    "brier": "neg_brier_score",
    "log_loss": "neg_log_loss",
}


def split_holdout(frame: pd.DataFrame, fraction: float, seed: int, *, cv_folds: int):
    """Seeded stratified holdout of the (already deduplicated) patients. -> (train, holdout)

    DataError (data.require_trainable) when the rows cannot give a holdout and `cv_folds`-fold
    CV on the rest, or when a feature has no value in the training part."""
    require_trainable(frame, holdout_fraction=fraction, cv_folds=cv_folds)
    train, holdout = train_test_split(
        frame, test_size=fraction, stratify=frame[LABEL], random_state=seed
    )
    require_features(train, "any row of the training part")
    return train, holdout


def xy(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """n patients -> (X: DataFrame of the 13 FEATURES columns, n rows; y: int ndarray (n,) of
    `disease`, 1 = present). KeyError when a column is missing."""
    return frame.loc[:, list(FEATURES)], frame[LABEL].to_numpy(dtype=int)


LOWER_IS_BETTER = frozenset({"brier", "log_loss"})  # the rest: higher is better


def oriented(metric: str, value: float) -> float:
    """`value` of `metric` turned so that higher is better (a loss negated)."""
    return -value if metric in LOWER_IS_BETTER else value


@dataclass(frozen=True)
class CrossValidation:
    """Repeated stratified k-fold CV of one model on the training part (n patients)."""

    scores: dict[str, float]  # cv_<metric>_mean/_std, cv_calibration_slope/_intercept
    fold_scores: dict[str, np.ndarray]  # metric -> (folds * repeats,); same seed, same folds
    y: np.ndarray  # (n,) 0/1 labels
    oof: np.ndarray  # (repeats, n) P(disease), each row by a model fitted without it


def cross_validated(
    model, frame: pd.DataFrame, *, folds: int, repeats: int, seed: int, n_jobs: int
) -> CrossValidation:
    """Repeated stratified k-fold CV: per-fold scores of every CV_SCORERS metric, their mean
    and std, and the out-of-fold predictions with their calibration slope and intercept
    (pooled over repeats). The same `seed` gives the same folds: scores of two models with
    one seed are paired. Raises what fitting raises."""
    X, y = xy(frame)
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    result = cross_validate(
        model,
        X,
        y,
        cv=cv,
        scoring=CV_SCORERS,
        n_jobs=n_jobs,
        error_score="raise",
        return_estimator=True,
        return_indices=True,
    )
    oof = np.full((repeats, len(y)), np.nan)
    for i, (fitted, test) in enumerate(
        zip(result["estimator"], result["indices"]["test"], strict=True)
    ):
        oof[i // folds, test] = probability_of_disease(fitted, X.iloc[test])
    fold_scores, scores = {}, {}
    for name, scorer in CV_SCORERS.items():
        values = result[f"test_{name}"] * (-1 if scorer.startswith("neg_") else 1)
        fold_scores[name] = values
        scores[f"cv_{name}_mean"] = float(np.mean(values))
        scores[f"cv_{name}_std"] = float(np.std(values))
    slope, intercept = calibration_slope_intercept(*pooled(y, oof))
    scores |= {"cv_calibration_slope": slope, "cv_calibration_intercept": intercept}
    return CrossValidation(scores=scores, fold_scores=fold_scores, y=y, oof=oof)


def cv_score(
    model, frame: pd.DataFrame, metric: str, *, folds: int, repeats: int, seed: int, n_jobs: int
) -> float:
    """Mean CV score of one metric (for tuning), in its own sign: a loss stays positive."""
    X, y = xy(frame)
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    scores = cross_validate(
        model, X, y, cv=cv, scoring=CV_SCORERS[metric], n_jobs=n_jobs, error_score="raise"
    )
    return float(np.mean(scores["test_score"])) * (
        -1 if CV_SCORERS[metric].startswith("neg_") else 1
    )


def probability_of_disease(model, X) -> np.ndarray:
    """X: n rows of the 13 features (DataFrame or array) -> ndarray (n,) of P(disease) in [0, 1],
    column 1 of the fitted classifier's predict_proba (classes 0, 1)."""
    return model.predict_proba(X)[:, 1]


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """y: ndarray (n,) of 0/1 labels; p: ndarray (n,) of P(disease), disease predicted where
    p >= threshold. -> roc_auc (NaN when y has one class), accuracy, precision, recall, f1
    (0 when undefined), brier, log_loss."""
    predicted = (p >= threshold).astype(int)
    has_both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(metrics.roc_auc_score(y, p)) if has_both else float("nan"),
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "precision": float(metrics.precision_score(y, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(y, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(y, predicted, zero_division=0)),
        "brier": float(metrics.brier_score_loss(y, p)),
        "log_loss": float(metrics.log_loss(y, p, labels=[0, 1])),
    }


def holdout_metrics(model, holdout: pd.DataFrame, threshold: float) -> dict[str, float]:
    """`classification_metrics` and the calibration slope and intercept of a fitted pipeline on
    the holdout (FEATURES and LABEL columns), each name prefixed: holdout_roc_auc, ..."""
    X, y = xy(holdout)
    p = probability_of_disease(model, X)
    scores = classification_metrics(y, p, threshold)
    scores["calibration_slope"], scores["calibration_intercept"] = calibration_slope_intercept(y, p)
    return {f"holdout_{name}": value for name, value in scores.items()}


# --- calibration, intervals, decision curve, threshold and subgroups: one implementation, used
# by the report, the gate and monitoring ------------------------------------------------------

_EPSILON = 1e-12  # probabilities are clipped to [ε, 1 - ε] before their log-odds


def log_odds(p: np.ndarray) -> np.ndarray:
    """P(disease) (any shape) -> its log-odds log(p / (1 - p)), p clipped to [1e-12, 1 - 1e-12]."""
    return special.logit(np.clip(p, _EPSILON, 1 - _EPSILON))


def calibration_slope_intercept(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """y: (n,) 0/1 outcomes; p: (n,) predicted P(disease). -> (slope, intercept)

    Slope: the coefficient of a logistic regression of y on the log-odds of p (1 is ideal;
    above 1 the model is under-confident, below 1 over-confident). Intercept
    (calibration-in-the-large): the intercept of a logistic regression of y with the log-odds
    as an offset (0 is ideal; above 0 the model predicts too low on average). Van Calster et
    al. 2019, BMC Medicine 17:230. NaN for both with one class or separated outcomes."""
    y = np.asarray(y, dtype=float)
    if len(np.unique(y)) < 2:
        return float("nan"), float("nan")
    x = log_odds(np.asarray(p, dtype=float))
    ones = np.ones_like(x)
    slope = _logistic_fit(np.column_stack([ones, x]), y, offset=0.0)
    intercept = _logistic_fit(ones[:, None], y, offset=x)
    return float(slope[1]), float(intercept[0])


def _logistic_fit(design: np.ndarray, y: np.ndarray, offset) -> np.ndarray:
    """Maximum-likelihood coefficients of logit P(y=1) = design @ b + offset, by Newton's
    method: these one- and two-parameter fits run thousands of times in a bootstrap, where a
    general solver costs milliseconds each. NaN when it does not converge (separation)."""
    coef = np.zeros(design.shape[1])
    for _ in range(50):
        mu = special.expit(design @ coef + offset)
        hessian = design.T @ (design * (mu * (1 - mu))[:, None])
        try:
            step = np.linalg.solve(hessian, design.T @ (y - mu))
        except np.linalg.LinAlgError:
            break
        coef += step
        if np.max(np.abs(step)) < 1e-10:
            return coef
    return np.full(design.shape[1], np.nan)


def pooled(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y: (n,); p: (n,) or out-of-fold (repeats, n). -> (y, p) as 1-D arrays, y repeated once
    per repeat: every repeat predicts every patient once."""
    p = np.asarray(p, dtype=float)
    if p.ndim == 1:
        return np.asarray(y), p
    return np.tile(y, p.shape[0]), p.ravel()


def sensitivity_specificity(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    """y: (n,) 0/1; p: (n,) P(disease), disease predicted where p >= threshold. -> (share of
    the diseased predicted diseased, share of the healthy predicted healthy); NaN without any."""
    y, predicted = np.asarray(y) == 1, np.asarray(p) >= threshold
    sensitivity = predicted[y].mean() if y.any() else float("nan")
    specificity = (~predicted[~y]).mean() if (~y).any() else float("nan")
    return float(sensitivity), float(specificity)


Figures = Callable[[np.ndarray, np.ndarray], dict[str, float]]  # (y, p) 1-D -> by name


def figures_at(threshold: float) -> Figures:
    """The figures a clinical report gives of P(disease) predictions, computed together from
    (y, p) 1-D: roc_auc, brier, log_loss, calibration_slope, calibration_intercept, and
    sensitivity and specificity at `threshold`. ROC-AUC and calibration are NaN with one
    class."""

    def figures(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        both = len(np.unique(y)) == 2
        slope, intercept = calibration_slope_intercept(y, p)
        sensitivity, specificity = sensitivity_specificity(y, p, threshold)
        x = log_odds(p)
        return {
            "roc_auc": _roc_auc(y, p) if both else float("nan"),
            "brier": float(np.mean((p - y) ** 2)),
            "log_loss": float(-np.mean(y * x - np.log1p(np.exp(x)))),
            "calibration_slope": slope,
            "calibration_intercept": intercept,
            "sensitivity": sensitivity,
            "specificity": specificity,
        }

    return figures


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    # the Mann-Whitney form of ROC-AUC (ties count half): sklearn's roc_auc_score without
    # its input checks, which cost more than the figure itself in a bootstrap
    ranks = stats.rankdata(p)
    positives = y == 1
    n1, n0 = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def bootstrap(
    figures: Figures,
    y: np.ndarray,
    p: np.ndarray,
    *,
    samples: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Each of `figures` (as figures_at gives) with its bootstrap interval over patients:
    {name: {"value", "low", "high"}}. y: (n,); p: (n,) or out-of-fold (repeats, n), a
    patient's repeats resampled together. `samples` resamples of n patients with replacement,
    seeded; the percentile interval at `level`, resamples where a figure is NaN (one class
    drawn) left out of its interval; low and high NaN when fewer than half give a number."""
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    drawn = [
        figures(*pooled(y[rows], p[..., rows]))
        for rows in rng.integers(0, len(y), (samples, len(y)))
    ]
    tail = (1 - level) / 2 * 100
    result = {}
    for name, value in figures(*pooled(y, p)).items():
        values = np.array([d[name] for d in drawn])
        values = values[~np.isnan(values)]
        enough = len(values) >= samples / 2
        low, high = np.percentile(values, [tail, 100 - tail]) if enough else (np.nan, np.nan)
        result[name] = {"value": value, "low": float(low), "high": float(high)}
    return result


def decision_curve(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """Net benefit (Vickers and Elkin 2006) at each threshold probability t: true positives
    minus false positives weighted by t / (1 - t), per patient; for the model (treat where
    p >= t), "treat all" and "treat none" (0). y: (n,); p: (n,) or (repeats, n); thresholds
    in (0, 1). -> DataFrame with columns threshold, model, treat_all, treat_none."""
    y, p = pooled(y, p)
    n, prevalence = len(y), float(np.mean(y))
    t = np.asarray(thresholds, dtype=float)
    weight = t / (1 - t)
    treated = p[None, :] >= t[:, None]
    true_pos = (treated & (y[None, :] == 1)).sum(axis=1) / n
    false_pos = (treated & (y[None, :] == 0)).sum(axis=1) / n
    return pd.DataFrame(
        {
            "threshold": t,
            "model": true_pos - false_pos * weight,
            "treat_all": prevalence - (1 - prevalence) * weight,
            "treat_none": 0.0,
        }
    )


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The highest threshold (the most specific one, on a 0.001 grid, rounded down) at which
    at least `target` of the diseased are predicted diseased (p >= threshold): moving the
    threshold down from 1, the first one that reaches the target. y: (n,); p: (n,) or
    (repeats, n). ValueError without any diseased patient or with target outside (0, 1]."""
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity {target} is not in (0, 1]")
    y, p = pooled(y, p)
    diseased = np.sort(p[y == 1])[::-1]
    if not len(diseased):
        raise ValueError("no diseased patient: no sensitivity to reach")
    needed = int(np.ceil(target * len(diseased) - 1e-9))  # patients to catch
    return float(np.floor(diseased[needed - 1] * 1000) / 1000)


def decision_threshold(
    y: np.ndarray, p: np.ndarray, *, policy: str, fixed: float, target_sensitivity: float
) -> float:
    """The threshold on P(disease) that `policy` gives: "fixed" -> `fixed`; "sensitivity" ->
    threshold_for_sensitivity(y, p, target_sensitivity) on the out-of-fold predictions p.
    ValueError for another policy."""
    if policy == "fixed":
        return fixed
    if policy == "sensitivity":
        return threshold_for_sensitivity(y, p, target_sensitivity)
    raise ValueError(f"threshold policy '{policy}' is not one of fixed, sensitivity")


def subgroups(X: pd.DataFrame, age_bands: Sequence[int]) -> dict[str, np.ndarray]:
    """Boolean masks (n,) of the subgroups reported: by sex, then by age band. X: n rows with
    `sex` (1 male) and `age`; age_bands: ascending limits, e.g. [50, 60] -> "age < 50",
    "age 50-59", "age >= 60"."""
    groups = {"male": (X["sex"] == 1).to_numpy(), "female": (X["sex"] == 0).to_numpy()}
    age = X["age"].to_numpy()
    limits = [-np.inf, *age_bands, np.inf]
    for low, high in zip(limits[:-1], limits[1:], strict=True):
        name = (
            f"age < {high:g}"
            if low == -np.inf
            else f"age >= {low:g}"
            if high == np.inf
            else f"age {low:g}-{high - 1:g}"
        )
        groups[name] = (age >= low) & (age < high)
    return groups


def subgroup_report(
    groups: dict[str, np.ndarray],
    y: np.ndarray,
    p: np.ndarray,
    *,
    threshold: float,
    min_n: int,
    samples: int,
    seed: int,
) -> dict[str, dict]:
    """Per subgroup (masks over the n patients, as `subgroups` gives): {"n", "positives",
    "too_few": bool, "metrics": bootstrap() of figures_at(threshold) or None}. A group of
    fewer than `min_n` patients is reported as too few rather than as numbers. y: (n,);
    p: (n,) or (repeats, n)."""
    report = {}
    for name, mask in groups.items():
        n = int(mask.sum())
        entry = {"n": n, "positives": int(np.asarray(y)[mask].sum()), "too_few": n < min_n}
        entry["metrics"] = (
            None
            if entry["too_few"]
            else bootstrap(figures_at(threshold), y[mask], p[..., mask], samples=samples, seed=seed)
        )
        report[name] = entry
    return report


def clinical_evidence(
    cv: CrossValidation,
    train: pd.DataFrame,
    *,
    threshold_policy: str,
    fixed_threshold: float,
    target_sensitivity: float,
    age_bands: Sequence[int],
    min_n: int,
    samples: int,
    seed: int,
) -> dict[str, Any]:
    """What a version's report states from its out-of-fold predictions on the training part
    (`cv` of the chosen model, `train` the same rows), JSON-able:

    - "threshold": {"policy", "value", "target_sensitivity"} (decision_threshold);
    - "out_of_fold": bootstrap of figures_at(threshold), intervals over patients;
    - "decision_curve": [{threshold, model, treat_all, treat_none}] for t in 0.05..0.95;
    - "subgroups": subgroup_report by sex and `age_bands` (fewer than `min_n`: too few);
    - "predictions": {"y": (n,), "oof": (repeats, n)} for the calibration plot.
    ValueError from decision_threshold."""
    threshold = decision_threshold(
        cv.y,
        cv.oof,
        policy=threshold_policy,
        fixed=fixed_threshold,
        target_sensitivity=target_sensitivity,
    )
    X = train.loc[:, list(FEATURES)]
    return {
        "threshold": {
            "policy": threshold_policy,
            "value": threshold,
            "target_sensitivity": target_sensitivity,
        },
        "out_of_fold": bootstrap(figures_at(threshold), cv.y, cv.oof, samples=samples, seed=seed),
        "decision_curve": decision_curve(cv.y, cv.oof, DECISION_THRESHOLDS).to_dict("records"),
        "subgroups": subgroup_report(
            subgroups(X, age_bands),
            cv.y,
            cv.oof,
            threshold=threshold,
            min_n=min_n,
            samples=samples,
            seed=seed,
        ),
        "predictions": {"y": cv.y.tolist(), "oof": cv.oof.tolist()},
    }


DECISION_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)


def save_plots(model, holdout: pd.DataFrame, threshold: float, out_dir: Path) -> list[Path]:
    """ROC curve, confusion matrix, calibration curve and importances, as PNG files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    X, y = xy(holdout)
    p = probability_of_disease(model, X)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 5))
    metrics.RocCurveDisplay.from_predictions(y, p, ax=ax, name="holdout")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    paths.append(_save(fig, out_dir / "roc_curve.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    metrics.ConfusionMatrixDisplay.from_predictions(
        y,
        (p >= threshold).astype(int),
        display_labels=["no disease", "disease"],
        ax=ax,
        colorbar=False,
    )
    paths.append(_save(fig, out_dir / "confusion_matrix.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    observed, predicted = calibration_curve(y, p, n_bins=8, strategy="quantile")
    ax.plot(predicted, observed, "o-", label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.set(xlabel="predicted P(disease)", ylabel="observed frequency", title="Calibration")
    ax.legend()
    paths.append(_save(fig, out_dir / "calibration_curve.png"))

    importances = feature_importances(model)
    if importances is not None:
        fig, ax = plt.subplots(figsize=(6, 6))
        importances.sort_values().plot.barh(ax=ax)
        ax.set(title="Feature importance" if _is_tree(model) else "Coefficient (log-odds)")
        paths.append(_save(fig, out_dir / "feature_importance.png"))
    return paths


def _is_tree(model) -> bool:
    return hasattr(model[-1], "feature_importances_")


def feature_importances(model) -> pd.Series | None:
    """One value per transformed column (`transformed_feature_names`, e.g. "cp=0") of a fitted
    pipeline: a tree model's feature_importances_, else a linear model's coefficients
    (log-odds), of the estimator inside a (non-ensemble) calibration wrapper; None when it has
    neither (a kernel model) or a sparse coef_."""
    estimator = base_estimator(model)
    names = transformed_feature_names()
    if hasattr(estimator, "feature_importances_"):
        return pd.Series(estimator.feature_importances_, index=names)
    coef = getattr(estimator, "coef_", None)
    if coef is not None and not hasattr(coef, "toarray"):
        return pd.Series(np.ravel(coef), index=names)
    return None


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
