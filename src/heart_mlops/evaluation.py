"""Holdout split, cross-validation, metrics, plots and the model card."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
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


def cross_validated(
    model, frame: pd.DataFrame, *, folds: int, repeats: int, seed: int, n_jobs: int
) -> dict[str, float]:
    """Repeated stratified k-fold CV: `cv_<metric>_mean` and `cv_<metric>_std` for every metric."""
    X, y = xy(frame)
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    scores = cross_validate(
        model, X, y, cv=cv, scoring=CV_SCORERS, n_jobs=n_jobs, error_score="raise"
    )
    result = {}
    for name, scorer in CV_SCORERS.items():
        values = scores[f"test_{name}"] * (-1 if scorer.startswith("neg_") else 1)
        result[f"cv_{name}_mean"] = float(np.mean(values))
        result[f"cv_{name}_std"] = float(np.std(values))
    return result


def cv_score(
    model, frame: pd.DataFrame, metric: str, *, folds: int, repeats: int, seed: int, n_jobs: int
) -> float:
    """Mean CV score of one metric (for selection and tuning)."""
    X, y = xy(frame)
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    scores = cross_validate(
        model, X, y, cv=cv, scoring=CV_SCORERS[metric], n_jobs=n_jobs, error_score="raise"
    )
    return float(np.mean(scores["test_score"]))


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
    """`classification_metrics` of a fitted pipeline on the holdout (FEATURES and LABEL columns),
    each name prefixed: holdout_roc_auc, holdout_accuracy, ..."""
    X, y = xy(holdout)
    scores = classification_metrics(y, probability_of_disease(model, X), threshold)
    return {f"holdout_{name}": value for name, value in scores.items()}


def metrics_by_sex(model, holdout: pd.DataFrame, threshold: float) -> dict[str, dict]:
    """`classification_metrics` per sex on the holdout: {"male"|"female": {"n": rows, metric:
    value}}; a sex without rows is left out."""
    X, y = xy(holdout)
    p = probability_of_disease(model, X)
    groups = {}
    for code, label in ((1, "male"), (0, "female")):
        mask = (X["sex"] == code).to_numpy()
        if mask.sum():
            groups[label] = {
                "n": int(mask.sum()),
                **classification_metrics(y[mask], p[mask], threshold),
            }
    return groups


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
    (log-odds); None when it has neither (a calibrated or kernel model) or a sparse coef_."""
    estimator = model[-1]
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


def _metric_table(values: dict) -> str:
    """A Markdown table of metric name -> value, 4 decimals."""
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in values.items())
    return "| metric | value |\n| --- | --- |\n" + rows


def _sex_table(by_sex: dict) -> str:
    """A Markdown table of `metrics_by_sex`: n, ROC-AUC, accuracy and recall per sex, 3 decimals."""
    rows = "\n".join(
        f"| {group} | {m['n']} | {m['roc_auc']:.3f} | {m['accuracy']:.3f} | {m['recall']:.3f} |"
        for group, m in by_sex.items()
    )
    header = "| group | n | ROC-AUC | accuracy | recall |\n| --- | --- | --- | --- | --- |\n"
    return header + rows


def model_card(
    *,
    model_name: str,
    version: str | None,
    candidate: str,
    params: dict,
    fingerprint: dict,
    cv: dict,
    holdout: dict,
    by_sex: dict,
    threshold: float,
    synthetic: bool,
) -> str:
    """The model card in Markdown: intended use; the model (`candidate`, `params`, `threshold`
    on P(disease)); the data (`fingerprint` as Dataset.fingerprint); tables of the `cv` and
    `holdout` metrics (name: value) and of `by_sex` (metrics_by_sex); limitations. A warning
    first when `synthetic`."""
    warning = (
        "\n**Trained on synthetic data: for testing the pipeline only, never for patients.**\n"
        if synthetic
        else ""
    )
    return f"""# Model card: {model_name} {f"version {version}" if version else ""}
{warning}
## Intended use
Decision support for research and teaching: estimates P(heart disease) from 13 clinical
features of an adult patient. Not a medical device; not for diagnosis without a clinician.

## Model
Candidate `{candidate}`, one sklearn Pipeline (missing-code handling, imputation, scaling,
one-hot encoding, estimator). Decision threshold on P(disease): {threshold}.
Parameters: `{params}`

## Data
Fingerprint: sha256 `{fingerprint.get("sha256")}`, format {fingerprint.get("format")},
{fingerprint.get("rows_raw")} rows read, {fingerprint.get("rows_distinct")} distinct patients
({fingerprint.get("duplicates_removed")} duplicate records removed before any split).
Label: `disease` = 1 when heart disease is present (heart.csv's `target` is inverted).

## Cross-validated metrics (training part)
{_metric_table(cv)}

## Holdout metrics
{_metric_table(holdout)}

## Holdout metrics by sex
{_sex_table(by_sex)}

## Limitations
- Trained on about 300 patients of a single hospital (Cleveland Clinic, 1988); other
  populations, hospitals and eras may differ (calibration especially).
- Women are under-represented (about a third of patients); per-group figures rest on few rows.
- Features that other hospitals often lack (ca, thal, slope, chol) are imputed, which lowers
  accuracy for such records.
"""
