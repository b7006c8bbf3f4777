"""Drift and live performance of a prediction-log window: pure functions, no I/O.

A window's champion rows (one served version) are compared with the rows that version was
trained on (registry.REFERENCE_ARTIFACT), both with the missing codes as NaN: the log's
`<feature>_used` columns against the reference as stored. Per feature, Evidently's drift test
(the column's type from data.py: coded features categorical, measured ones numerical) and a
test of the share of missing values (Fisher's exact test: Evidently's tests drop missing
values, and a new missing-value pattern is drift that matters to this model). A feature
drifts when either test says so; drift_share = drifted features / 13.

Where outcomes were fed back, the live figures of evaluation.figures_at with bootstrap 95 %
intervals (evaluation.bootstrap: one implementation with the training report) beside the
version's holdout figures; the challenger's beside the champion's on the rows both scored.

Evidently is imported here lazily (`drift_report`), never by the API; its telemetry is off.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from heart_mlops.data import FEATURE_SPECS, FEATURES
from heart_mlops.errors import HeartMlopsError
from heart_mlops.predictionlog import as_utc

# coded features (codes in data.py) are tested as categories, measured ones as numbers
CATEGORICAL = tuple(spec.name for spec in FEATURE_SPECS if spec.codes)
NUMERICAL = tuple(name for name in FEATURES if name not in CATEGORICAL)
MISSING_ALPHA = 0.05  # level of the missing-share test (Evidently's p-value tests use 0.05 too)
LIVE_FIGURES = ("roc_auc", "brier", "calibration_intercept", "calibration_slope", "positive_rate")
DEFAULT_WINDOW = dt.timedelta(hours=1)  # without a monitoring schedule


def schedule_window(schedule: str | None, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The default window of `monitor`: [now - one period of `schedule`, now). `schedule`: a
    cron expression or preset (`@hourly`, ...) in UTC, as HEART_MLOPS_MONITOR_SCHEDULE; its
    period is the time between its last two fire times up to `now` (aware or naive UTC).
    None: one hour. Raises HeartMlopsError naming a schedule croniter cannot read."""
    now = as_utc(now)
    if schedule is None:
        return now - DEFAULT_WINDOW, now
    from croniter import croniter

    try:
        times = croniter(schedule, now)
    except (ValueError, KeyError) as exc:
        raise HeartMlopsError(
            f"monitor_schedule {schedule!r} is not a cron expression or preset "
            f"(e.g. @hourly, */30 * * * *): {exc}"
        ) from None
    last = times.get_prev(dt.datetime)
    before = times.get_prev(dt.datetime)
    return now - (last - before), now


# --- drift -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    """One feature of a window against its reference."""

    feature: str
    method: str | None  # Evidently's test (e.g. "K-S p_value"); None when it could not run
    drift_score: float | None  # its score: a p-value for the tests chosen on these row counts
    threshold: float | None  # its threshold
    value_drifted: bool  # Evidently's verdict on the values present
    missing_share: float  # share of the window's rows with the value missing
    reference_missing_share: float  # the same in the reference
    missing_p_value: float  # Fisher's exact test of the two shares (two-sided)
    missing_drifted: bool  # missing_p_value < MISSING_ALPHA

    @property
    def drifted(self) -> bool:
        """Either test found drift."""
        return self.value_drifted or self.missing_drifted

    @property
    def strength(self) -> float:
        """For ordering, most drifted first: the smaller of the two p-values (1 when none)."""
        scores = [self.missing_p_value]
        if self.drift_score is not None and self.method and "p_value" in self.method:
            scores.append(self.drift_score)
        return min(scores)


def missing_shift(current: pd.DataFrame, reference: pd.DataFrame, name: str) -> tuple[float, ...]:
    """The share of missing `name` values in `current` and `reference` (NaN = missing) and the
    two-sided p-value of Fisher's exact test that they are equal. -> (current share,
    reference share, p-value); the p-value is 1 when either frame has no rows."""
    from scipy.stats import fisher_exact

    now_missing, ref_missing = int(current[name].isna().sum()), int(reference[name].isna().sum())
    n_now, n_ref = len(current), len(reference)
    if not n_now or not n_ref:
        return (now_missing / n_now if n_now else 0.0), (ref_missing / n_ref if n_ref else 0.0), 1.0
    table = [[now_missing, n_now - now_missing], [ref_missing, n_ref - ref_missing]]
    return now_missing / n_now, ref_missing / n_ref, float(fisher_exact(table).pvalue)


def drift_report(
    current: pd.DataFrame, reference: pd.DataFrame, share_threshold: float = 0.5
) -> tuple[dict[str, dict], str]:
    """Evidently's data-drift preset over the features of `current` (the window's rows) that
    have a value in both frames, against `reference`; both: DataFrames with the 13 FEATURES as
    float columns, NaN = missing. -> ({feature: {"method", "drift_score", "threshold",
    "drifted"}}, the report as a self-contained HTML page, whose headline applies
    `share_threshold` to Evidently's tests alone: the missing-share tests are not in it).
    Evidently chooses each test by column type and row count (K-S / chi-square / Z below 1000
    reference rows)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry: off
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [n for n in FEATURES if current[n].notna().any() and reference[n].notna().any()]
    definition = DataDefinition(
        numerical_columns=[n for n in columns if n in NUMERICAL],
        categorical_columns=[n for n in columns if n in CATEGORICAL],
    )
    preset = DataDriftPreset(columns=columns, drift_share=share_threshold)
    report = Report([preset], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=definition),
    )
    content = snapshot.dict()
    found: dict[str, dict] = {}
    for metric in content["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            found[metric["id"]] = {
                "feature": config["column"],
                "method": config.get("method"),
                "drift_score": float(metric["value"]),
                "threshold": config.get("threshold"),
                "drifted": False,
            }
    for test in content["tests"]:
        entry = found.get(test["metric_config"]["metric_id"])
        if entry is not None:
            entry["drifted"] = test["status"] == "FAIL"
    by_feature = {entry.pop("feature"): entry for entry in found.values()}
    return by_feature, snapshot.get_html_str(as_iframe=False)


def feature_drift(
    current: pd.DataFrame, reference: pd.DataFrame, evidently: dict[str, dict]
) -> list[FeatureDrift]:
    """Each of the 13 FEATURES: Evidently's result (`drift_report`'s dict; a feature it did not
    test, e.g. with no value in the window, has no value drift) and the missing-share test.
    -> FeatureDrift per feature, most drifted first."""
    results = []
    for name in FEATURES:
        share, reference_share, p_value = missing_shift(current, reference, name)
        value = evidently.get(name, {})
        results.append(
            FeatureDrift(
                feature=name,
                method=value.get("method"),
                drift_score=value.get("drift_score"),
                threshold=value.get("threshold"),
                value_drifted=bool(value.get("drifted", False)),
                missing_share=share,
                reference_missing_share=reference_share,
                missing_p_value=p_value,
                missing_drifted=p_value < MISSING_ALPHA,
            )
        )
    return sorted(results, key=lambda f: (not f.drifted, f.strength, FEATURES.index(f.feature)))


@dataclass(frozen=True)
class DriftSummary:
    """The drift of one version's rows in a window."""

    rows: int
    dataset_drift: bool  # drift_share >= the threshold, with enough rows
    reason: str  # why dataset_drift is what it is
    drift_share: float | None  # drifted / 13; None without enough rows
    features: list[FeatureDrift] = field(default_factory=list)  # most drifted first

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted features, most drifted first."""
        return [f.feature for f in self.features if f.drifted]


def summarise_drift(
    features: list[FeatureDrift], rows: int, *, min_rows: int, threshold: float
) -> DriftSummary:
    """The dataset-level verdict of `features` (feature_drift's) on `rows` rows: drifted when
    the share of drifted features is at least `threshold` (0-1); below `min_rows` rows,
    `not_enough_rows`."""
    if rows < min_rows:
        return not_enough_rows(rows, min_rows)
    share = sum(f.drifted for f in features) / len(FEATURES)
    drifted = share >= threshold
    verdict = "at or above" if drifted else "below"
    reason = f"drift share {share:.2f} {verdict} the threshold {threshold:.2f} on {rows} rows"
    return DriftSummary(rows, drifted, reason, share, features)


def not_enough_rows(rows: int, min_rows: int) -> DriftSummary:
    """A window too small for drift tests: no test is run, dataset_drift is False."""
    return DriftSummary(rows, False, f"not enough rows ({rows} < {min_rows})", None, [])


# --- live outcome metrics --------------------------------------------------------------------


def _live_figures(threshold: float):
    """evaluation.figures_at(threshold), limited to LIVE_FIGURES, plus the predicted positive
    rate (share of p >= threshold) and the observed prevalence."""
    from heart_mlops.evaluation import figures_at

    base = figures_at(threshold)

    def figures(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        found = base(y, p)
        return {
            **{name: found[name] for name in LIVE_FIGURES if name in found},
            "positive_rate": float(np.mean(p >= threshold)),
            "prevalence": float(np.mean(y)),
        }

    return figures


def live_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float, *, samples: int, seed: int
) -> dict[str, Any] | None:
    """Outcome metrics of rows with a fed-back outcome: y (n,) 0/1, p (n,) P(disease), the
    decision at `threshold`. -> {"outcomes": n, figure: {"value", "low", "high"}} for ROC-AUC,
    Brier score, calibration intercept and slope, positive rate and prevalence (bootstrap 95 %,
    `samples` resamples, `seed`), or None without outcomes."""
    from heart_mlops.evaluation import bootstrap

    if len(y) == 0:
        return None
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    found = bootstrap(_live_figures(threshold), y, p, samples=samples, seed=seed)
    return {"outcomes": len(y), **found}


def holdout_comparison(live: dict[str, Any] | None, holdout: dict[str, float]) -> dict:
    """The version's holdout figures (registry tags `holdout_<figure>`) beside the live ones:
    {figure: {"holdout", "live", "inside"}}, `inside` True when the holdout value lies in the
    live 95 % interval (None when either is missing)."""
    rows = {}
    for name in ("roc_auc", "brier", "calibration_intercept", "calibration_slope"):
        reference = holdout.get(f"holdout_{name}")
        now = (live or {}).get(name)
        inside = None
        if reference is not None and now is not None and not math.isnan(now["low"]):
            inside = now["low"] <= reference <= now["high"]
        rows[name] = {"holdout": reference, "live": None if now is None else now["value"]}
        rows[name]["inside"] = inside
    return rows


def shadow_comparison(
    champion: pd.DataFrame,
    challenger: pd.DataFrame,
    *,
    samples: int,
    seed: int,
    champion_live: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The challenger beside the champion on the rows both scored (prediction-log rows of each
    role, joined on request_id). -> {"challenger_version", "rows", "agreement" (share of rows
    with the same decision, each model at its own threshold), "champion": live_metrics,
    "challenger": live_metrics} over the joined rows with an outcome; None without such rows.
    `champion_live`: live_metrics of all of `champion`'s rows with an outcome, reused when the
    challenger scored every one of them (the same rows in the same order: the same figures)."""
    both = champion.merge(challenger, on="request_id", suffixes=("", "_challenger"))
    if both.empty:
        return None
    agreement = float(np.mean(both["prediction"] == both["prediction_challenger"]))
    scored = both[both["outcome"].notna()]
    y = scored["outcome"].to_numpy(dtype=int)
    result = {
        "challenger_version": str(both["model_version_challenger"].iloc[-1]),
        "rows": len(both),
        "agreement": agreement,
    }
    reuse = champion_live is not None and len(scored) == champion["outcome"].notna().sum()
    for role, suffix in (("champion", ""), ("challenger", "_challenger")):
        if role == "champion" and reuse:
            result[role] = champion_live
            continue
        threshold = float(both[f"threshold{suffix}"].iloc[-1])
        p = scored[f"probability{suffix}"].to_numpy(dtype=float)
        result[role] = live_metrics(y, p, threshold, samples=samples, seed=seed)
    return result


# --- the decision ------------------------------------------------------------------------------


def retrain_decision(
    drift: DriftSummary,
    live: dict[str, Any] | None,
    *,
    roc_auc_floor: float,
    min_outcomes: int,
    last_trigger: dt.datetime | None,
    now: dt.datetime,
    cooldown_hours: float,
) -> tuple[bool, str]:
    """Whether to ask for a retrain, and why (or why not), in one line: drift
    (drift.dataset_drift: the share at or above its threshold on enough rows), or live ROC-AUC
    below `roc_auc_floor` with at least `min_outcomes` outcomes; and no earlier request within
    `cooldown_hours` of `now` (`last_trigger`: the latest request, aware UTC, or None)."""
    reasons = []
    if drift.dataset_drift:
        reasons.append(f"data drift: {drift.reason} ({', '.join(drift.drifted_features)})")
    if live is not None and live["outcomes"] >= min_outcomes:
        auc = live["roc_auc"]["value"]
        if not math.isnan(auc) and auc < roc_auc_floor:
            reasons.append(
                f"live ROC-AUC {auc:.3f} below the floor {roc_auc_floor:.2f} "
                f"on {live['outcomes']} outcomes"
            )
    if not reasons:
        outcomes = 0 if live is None else live["outcomes"]
        return False, f"no trigger: {drift.reason}; {outcomes} outcomes"
    if last_trigger is not None and now - last_trigger < dt.timedelta(hours=cooldown_hours):
        return False, (
            f"cooldown: a retrain was requested at {last_trigger.isoformat()}, within "
            f"{cooldown_hours:g} h; would trigger on {'; '.join(reasons)}"
        )
    return True, "; ".join(reasons)
