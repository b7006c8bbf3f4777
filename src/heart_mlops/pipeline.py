"""The pipeline as plain functions, one per step. The DAG and the CLI both call these.

Each step takes the typed results of earlier steps (`step_results`) and returns its own; data
and models move through the artifact store under the pipeline run's own prefix, and MLflow is
reached only through `registry`. `graph.wire` orders the steps; `run_pipeline` runs that graph
in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from heart_mlops import monitoring, predictionlog, registry, storage, tuning
from heart_mlops.data import FEATURES, load_bytes, sha256, synthetic_csv
from heart_mlops.errors import ConfigError, DataError, HeartMlopsError, StorageError
from heart_mlops.evaluation import (
    LOWER_IS_BETTER,
    CrossValidation,
    bootstrap,
    clinical_evidence,
    cross_validated,
    figures_at,
    holdout_metrics,
    oriented,
    probability_of_disease,
    save_plots,
    split_holdout,
    xy,
)
from heart_mlops.graph import task_id, wire
from heart_mlops.models import Candidate, load_candidates
from heart_mlops.report import render as render_report
from heart_mlops.settings import Settings
from heart_mlops.step_results import (
    Evaluated,
    Extracted,
    Monitored,
    PipelineResult,
    Prepared,
    Registered,
    Selected,
    StepResult,
    Trained,
    Tuned,
)

log = logging.getLogger(__name__)


def new_run_key(prefix: str = "local") -> str:
    """A pipeline run key for a run outside Airflow: `<prefix>-<UTC time>`."""
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"


def _safe_key(run_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_key)


@contextlib.contextmanager
def _failing(parent_run_id: str | None):
    """Any error inside marks the pipeline's MLflow run FAILED before it propagates."""
    try:
        yield
    except BaseException as exc:
        registry.mark_failed(parent_run_id, f"{type(exc).__name__}: {exc}")
        raise


def _step_run(run: Extracted, name: str, **tags):
    """The MLflow run of one step of pipeline run `run`."""
    return registry.step_run(
        name,
        parent_run_id=run.parent_run_id,
        pipeline_run=run.run_key,
        synthetic=run.synthetic,
        tags=tags,
    )


def _read_source(settings: Settings, source: str, synthetic: bool) -> bytes:
    if synthetic:
        log.warning(
            "using SYNTHETIC data (seed %d): its model will never become champion", settings.seed
        )
        return synthetic_csv(seed=settings.seed)
    try:
        return storage.read_bytes(source)
    except StorageError as exc:
        if "no such" in str(exc) or "directory" in str(exc):
            raise DataError(f"cannot read the training data: {exc}") from None
        raise


def extract_data(
    settings: Settings,
    *,
    run_key: str,
    data_uri: str | None = None,
    synthetic: bool = False,
    trigger: dict[str, str] | None = None,
) -> Extracted:
    """Copy the source data (or seeded synthetic data, only when asked) into the run's prefix.
    `trigger`: why the run runs (e.g. {"triggered_by": "asset_triggered", "trigger_reason":
    ...}), tags of the pipeline's parent MLflow run.

    DataError when the source does not exist; StorageError when the store fails."""
    experiment_id = registry.configure(settings)
    source = "synthetic" if synthetic else (data_uri or settings.data_uri)
    raw = _read_source(settings, source, synthetic)
    prefix = storage.join(settings.artifact_store, "runs", _safe_key(run_key))
    storage.ensure_bucket_of(prefix)
    raw_uri = storage.write_bytes(storage.join(prefix, "raw", "data.csv"), raw)
    parent = registry.pipeline_run(experiment_id, run_key, source, synthetic, trigger)
    log.info("extracted %d bytes from %s to %s", len(raw), source, raw_uri)
    return Extracted(
        run_key=run_key,
        prefix=prefix,
        raw_uri=raw_uri,
        source=source,
        synthetic=synthetic,
        parent_run_id=parent,
        sha256=sha256(raw),
    )


def preprocess_data(settings: Settings, extracted: Extracted) -> Prepared:
    """Validate, clean, deduplicate, split; write Parquet splits. DataError on invalid data."""
    with _failing(extracted.parent_run_id):
        registry.configure(settings)
        dataset = load_bytes(storage.read_bytes(extracted.raw_uri))
        train, holdout = split_holdout(
            dataset.frame, settings.holdout_fraction, settings.seed, cv_folds=settings.cv_folds
        )
        prefix = extracted.prefix
        prepared = Prepared.extending(
            extracted,
            validated_uri=storage.write_frame(
                storage.join(prefix, "validated.parquet"), dataset.frame
            ),
            train_uri=storage.write_frame(storage.join(prefix, "train.parquet"), train),
            holdout_uri=storage.write_frame(storage.join(prefix, "holdout.parquet"), holdout),
            fingerprint=dataset.fingerprint,
            rows_train=len(train),
            rows_holdout=len(holdout),
        )
        storage.write_json(storage.join(prefix, "reports", "data.json"), prepared.to_xcom())
        registry.log_run_params(
            extracted.parent_run_id,
            {
                f"data_{key}": value
                for key, value in {
                    **dataset.fingerprint,
                    "rows_train": len(train),
                    "rows_holdout": len(holdout),
                }.items()
            },
        )
        return prepared


def _cross_validated(settings: Settings, model, train, seed: int | None = None) -> CrossValidation:
    """`model` cross-validated on `train` as the settings say (folds, repeats, jobs); folds by
    `seed`, else the settings' seed."""
    return cross_validated(
        model,
        train,
        folds=settings.cv_folds,
        repeats=settings.cv_repeats,
        seed=settings.seed if seed is None else seed,
        n_jobs=settings.n_jobs,
    )


def _candidate(settings: Settings, name: str) -> Candidate:
    return load_candidates(settings.model_params_path)[name]


def train_candidate(settings: Settings, name: str, prepared: Prepared) -> Trained:
    """Fit one candidate on the training part; store it; open its MLflow run."""
    with _failing(prepared.parent_run_id):
        registry.configure(settings)
        candidate = _candidate(settings, name)
        model = candidate.build(seed=settings.seed)
        started = time.perf_counter()
        model.fit(*xy(storage.read_frame(prepared.train_uri)))
        fit_seconds = time.perf_counter() - started
        model_uri = storage.write_bytes(
            storage.join(prepared.prefix, "models", f"{name}.skops"), registry.serialize(model)
        )
        with _step_run(prepared, name, step="candidate", candidate=name) as run_id:
            registry.log_params(model[-1].get_params())
            registry.log_metrics({"fit_seconds": fit_seconds})
        return Trained(name=name, model_uri=model_uri, run_id=run_id, params={**candidate.params})


def evaluate_candidate(settings: Settings, trained: Trained, prepared: Prepared) -> Evaluated:
    """CV on the training part, holdout metrics (reported, not used to select), plots."""
    with _failing(prepared.parent_run_id):
        registry.configure(settings)
        model = registry.deserialize(storage.read_bytes(trained.model_uri))
        train = storage.read_frame(prepared.train_uri)
        holdout = storage.read_frame(prepared.holdout_uri)
        scores = _cross_validated(settings, model, train).scores
        scores |= holdout_metrics(model, holdout, settings.threshold)
        with registry.resumed_run(trained.run_id), tempfile.TemporaryDirectory() as tmp:
            registry.log_metrics(scores)
            registry.log_files(save_plots(model, holdout, settings.threshold, Path(tmp)), "plots")
        storage.write_json(
            storage.join(prepared.prefix, "reports", f"evaluation_{trained.name}.json"), scores
        )
        return Evaluated.extending(trained, metrics=scores)


def select_best_model(
    settings: Settings, evaluations: list[Evaluated], parent_run_id: str | None = None
) -> Selected:
    """The candidate with the best mean CV score of `settings.selection_metric` (lowest for a
    loss). Every candidate was scored on the same folds (one seed): the comparison is paired."""
    metric = settings.selection_metric
    key = f"cv_{metric}_mean"
    ranking = sorted(evaluations, key=lambda e: oriented(metric, e.metrics[key]), reverse=True)
    best = ranking[0]
    log.info("best candidate by %s: %s (%.4f)", key, best.name, best.metrics[key])
    if parent_run_id:
        registry.configure(settings)
        registry.set_run_tag(parent_run_id, "best_candidate", best.name)
    return Selected.extending(
        best,
        selection_metric=metric,
        ranking=[
            {"name": e.name, **{k: e.metrics[k] for k in RANKING_FIGURES | {key} if k in e.metrics}}
            for e in ranking
        ],
    )


def _search_and_rescore(
    settings: Settings, candidate: Candidate, train, metric: str
) -> tuple[dict, CrossValidation, CrossValidation | None]:
    """Optuna search (if any trials and a space), then tuned and untuned scored on fresh folds
    (another seed than the search used). -> (tuned params, untuned CV, tuned CV or None)"""
    tuned_params: dict = {}
    if settings.tuning_trials > 0 and candidate.search:
        tuned_params, _ = tuning.search(
            candidate,
            train,
            settings,
            trials=settings.tuning_trials,
            metric=metric,
            on_trial=registry.log_trial,
        )
    fresh = settings.seed + 1
    untuned_cv = _cross_validated(settings, candidate.build(seed=settings.seed), train, fresh)
    tuned_cv = (
        _cross_validated(settings, candidate.build(tuned_params, seed=settings.seed), train, fresh)
        if tuned_params
        else None
    )
    return tuned_params, untuned_cv, tuned_cv


RANKING_FIGURES = frozenset(
    f"cv_{name}"
    for name in (
        "roc_auc_mean",
        "brier_mean",
        "log_loss_mean",
        "calibration_slope",
        "calibration_intercept",
    )
)


def _clinical_evidence(settings: Settings, chosen: CrossValidation, train) -> dict:
    return clinical_evidence(
        chosen,
        train,
        threshold_policy=settings.threshold_policy,
        fixed_threshold=settings.threshold,
        target_sensitivity=settings.target_sensitivity,
        age_bands=settings.subgroup_age_bands,
        min_n=settings.subgroup_min_n,
        samples=settings.bootstrap_samples,
        seed=settings.seed,
    )


def tune_best_model(settings: Settings, best: Selected, prepared: Prepared) -> Tuned:
    """Search the winner's space; re-score tuned and untuned on fresh folds; keep the better;
    refit it on the whole training part and store it."""
    metric, key = best.selection_metric, f"cv_{best.selection_metric}_mean"
    with _failing(prepared.parent_run_id):
        registry.configure(settings)
        candidate = _candidate(settings, best.name)
        train = storage.read_frame(prepared.train_uri)
        with _step_run(prepared, f"tune {best.name}", step="tuning", candidate=best.name):
            tuned_params, untuned_cv, tuned_cv = _search_and_rescore(
                settings, candidate, train, metric
            )
            label = tuning.choose(untuned_cv.scores, tuned_cv and tuned_cv.scores, metric)
            registry.log_params({f"tuned_{k}": v for k, v in tuned_params.items()})
            registry.log_metrics(
                {
                    f"untuned_{key}": untuned_cv.scores[key],
                    **({f"tuned_{key}": tuned_cv.scores[key]} if tuned_cv else {}),
                }
            )
            registry.set_tag("choice", label)
        chosen = tuned_cv if label == "tuned" else untuned_cv
        evidence = _clinical_evidence(settings, chosen, train) | {"candidates": best.ranking}
        evidence_uri = storage.write_json(
            storage.join(prepared.prefix, "reports", "clinical_evidence.json"), evidence
        )
        params = {**candidate.params, **(tuned_params if label == "tuned" else {})}
        model = candidate.build(params, seed=settings.seed).fit(*xy(train))
        model_uri = storage.write_bytes(
            storage.join(prepared.prefix, "models", "final.skops"), registry.serialize(model)
        )
        log.info(
            "registering the %s %s (%s %.4f vs untuned %.4f)",
            label,
            best.name,
            key,
            chosen.scores[key],
            untuned_cv.scores[key],
        )
        return Tuned(
            name=best.name,
            label=label,
            params=params,
            model_uri=model_uri,
            cv=chosen.scores,
            selection_metric=metric,
            trials=settings.tuning_trials,
            threshold=evidence["threshold"]["value"],
            evidence_uri=evidence_uri,
        )


def register_model(settings: Settings, tuned: Tuned, prepared: Prepared) -> Registered:
    """Log and register the chosen model with its model card; promote it if it beats champion.

    A rerun of the same pipeline run registers nothing new: it decides for its version."""
    name = settings.model_name
    with _failing(prepared.parent_run_id):
        registry.configure(settings)
        existing = registry.version_for_pipeline_run(name, prepared.run_key)
        holdout = storage.read_frame(prepared.holdout_uri)
        model = registry.deserialize(storage.read_bytes(tuned.model_uri))
        holdout_scores = holdout_metrics(model, holdout, tuned.threshold)
        if existing is None:
            version = _log_and_register(settings, model, tuned, prepared, holdout, holdout_scores)
        else:
            version = registry.version_of(existing)
            log.info("pipeline run %s already registered version %s", prepared.run_key, version)

        gate = f"holdout_{tuned.selection_metric}"  # the selection rule, on the same holdout

        def score(candidate_model) -> float:
            return holdout_metrics(candidate_model, holdout, tuned.threshold)[gate]

        blocker = registry.promotion_blocker(
            synthetic=prepared.synthetic,
            cv_roc_auc=tuned.cv["cv_roc_auc_mean"],
            leak_threshold=settings.leak_threshold,
        )
        promotion = registry.promote_if_better(
            name,
            version,
            score,
            allow=blocker is None,
            blocked_reason=blocker or "",
            metric=gate,
            lower_is_better=tuned.selection_metric in LOWER_IS_BETTER,
            margin=settings.promotion_margin,
        )
        registry.end_run(prepared.parent_run_id)
        result = Registered(
            model_name=name,
            version=version,
            champion=promotion.promoted,
            decision=promotion.reason,
            candidate=tuned.name,
            label=tuned.label,
            params=tuned.params,
            cv=tuned.cv,
            holdout=holdout_scores,
            threshold=tuned.threshold,
            synthetic=prepared.synthetic,
            run_key=prepared.run_key,
        )
        storage.write_json(
            storage.join(prepared.prefix, "reports", "registration.json"), result.to_xcom()
        )
        return result


def _log_and_register(
    settings: Settings,
    model,
    tuned: Tuned,
    prepared: Prepared,
    holdout,
    holdout_scores: dict[str, float],
) -> str:
    """The register step's MLflow run (parameters, metrics, plots, model, report), then a new
    version of the registered model. -> the version"""
    evidence = storage.read_json(tuned.evidence_uri)
    X, y = xy(holdout)
    p = probability_of_disease(model, X)
    threshold = tuned.threshold
    document = {
        "model_name": settings.model_name,
        "candidate": tuned.name,
        "calibration": _candidate(settings, tuned.name).calibration,
        "label": tuned.label,
        "params": tuned.params,
        "selection_metric": tuned.selection_metric,
        "synthetic": prepared.synthetic,
        "fingerprint": prepared.fingerprint,
        "evidence": evidence,
        "holdout": bootstrap(
            figures_at(threshold), y, p, samples=settings.bootstrap_samples, seed=settings.seed
        ),
        "holdout_predictions": {"y": y.tolist(), "p": p.tolist()},
    }
    with (
        _step_run(
            prepared,
            f"register {tuned.name}",
            step="register",
            candidate=tuned.name,
            tuning_label=tuned.label,
        ) as run_id,
        tempfile.TemporaryDirectory() as tmp,
    ):
        registry.log_params(tuned.params)
        registry.log_params(
            {
                "threshold": threshold,
                "threshold_policy": settings.threshold_policy,
                "candidate": tuned.name,
                "tuning_label": tuned.label,
            }
        )
        registry.log_metrics({**tuned.cv, **holdout_scores})
        registry.log_json(prepared.fingerprint, "data_fingerprint.json")
        registry.log_files(save_plots(model, holdout, threshold, Path(tmp)), "plots")
        model_uri = registry.log_model(
            model,
            holdout,
            threshold=threshold,
            reference=storage.read_frame(prepared.train_uri),
        )
    oof = evidence["out_of_fold"]
    tags = registry.version_tags(
        pipeline_run=prepared.run_key,
        run_id=run_id,
        candidate=tuned.name,
        tuning_label=tuned.label,
        threshold=threshold,
        synthetic=prepared.synthetic,
        fingerprint=prepared.fingerprint,
        scores={
            **tuned.cv,
            **holdout_scores,
            **{
                f"threshold_{figure}{part}": oof[figure][key]
                for figure in ("sensitivity", "specificity")
                for part, key in (("", "value"), ("_low", "low"), ("_high", "high"))
            },
        },
    ) | {"threshold_policy": settings.threshold_policy}
    description = f"{tuned.label} {tuned.name}, data sha256 {prepared.sha256[:12]}"
    version = registry.register(model_uri, settings.model_name, tags, description=description)
    document["version"] = version
    with registry.resumed_run(run_id):
        registry.log_json(document, REPORT_DOCUMENT)
        registry.log_text(render_report(document), REPORT_PAGE)
    return version


REPORT_DOCUMENT, REPORT_PAGE = "model_report.json", "model_report.html"


def compare_calibration(settings: Settings, data_uri: str) -> list[dict]:
    """Each candidate of model_params.yaml with calibration none, sigmoid and isotonic, its
    default parameters, cross-validated on the training part of `data_uri` with the same folds
    (paired). -> [{candidate, calibration, roc_auc, brier, log_loss, slope, intercept}]; the
    figures are None for "none" when the estimator has no predict_proba. DataError as
    training."""
    dataset = load_bytes(storage.read_bytes(data_uri))
    train, _ = split_holdout(
        dataset.frame, settings.holdout_fraction, settings.seed, cv_folds=settings.cv_folds
    )
    rows = []
    for name, candidate in load_candidates(settings.model_params_path).items():
        for method in (None, "sigmoid", "isotonic"):
            row = {"candidate": name, "calibration": method or "none"}
            try:
                model = dataclasses.replace(candidate, calibration=method).build(seed=settings.seed)
            except ConfigError:  # no predict_proba without calibration
                rows.append(row)
                continue
            scores = _cross_validated(settings, model, train).scores
            rows.append(
                row
                | {k: scores[f"cv_{k}_mean"] for k in ("roc_auc", "brier", "log_loss")}
                | {
                    "slope": scores["cv_calibration_slope"],
                    "intercept": scores["cv_calibration_intercept"],
                }
            )
    return rows


def report(settings: Settings, version: str) -> str:
    """The HTML report of a registered `version`, rendered again from the document stored
    with it. RegistryError when the version does not exist or has no report (registered
    before reports existed)."""
    registry.configure(settings)
    champion = registry.load_champion(settings, version)
    document = registry.load_json(champion.run_id, REPORT_DOCUMENT)
    return render_report(document)


StepCallback = Callable[[str, float, StepResult], None]  # (step id, seconds, its result)


class _InProcess:
    """`graph.Steps` that run each step now, in this process, and time it."""

    def __init__(
        self,
        settings: Settings,
        run_key: str,
        data_uri: str | None,
        synthetic: bool,
        on_step: StepCallback | None,
    ) -> None:
        self.settings, self.run_key = settings, run_key
        self.data_uri, self.synthetic, self.on_step = data_uri, synthetic, on_step
        self.timings: dict[str, float] = {}
        self.results: dict[str, object] = {}

    def _run(self, step_id: str, fn, *args, **kwargs):
        started = time.perf_counter()
        result = fn(self.settings, *args, **kwargs)
        self.timings[step_id] = time.perf_counter() - started
        if self.on_step:
            self.on_step(step_id, self.timings[step_id], result)
        return result

    def extract_data(self) -> Extracted:
        return self._run(
            "extract_data",
            extract_data,
            run_key=self.run_key,
            data_uri=self.data_uri,
            synthetic=self.synthetic,
        )

    def preprocess_data(self, extracted: Extracted) -> Prepared:
        self.results["data"] = self._run("preprocess_data", preprocess_data, extracted)
        return self.results["data"]

    def train_candidate(self, name: str, prepared: Prepared) -> Trained:
        return self._run(task_id("train", name), train_candidate, name, prepared)

    def evaluate_candidate(self, name: str, trained: Trained, prepared: Prepared) -> Evaluated:
        return self._run(task_id("evaluate", name), evaluate_candidate, trained, prepared)

    def select_best_model(self, evaluations: list[Evaluated], prepared: Prepared) -> Selected:
        self.results["evaluations"] = evaluations
        self.results["best"] = self._run(
            "select_best_model", select_best_model, evaluations, prepared.parent_run_id
        )
        return self.results["best"]

    def tune_best_model(self, best: Selected, prepared: Prepared) -> Tuned:
        self.results["tuned"] = self._run("tune_best_model", tune_best_model, best, prepared)
        return self.results["tuned"]

    def register_model(self, tuned: Tuned, prepared: Prepared) -> Registered:
        return self._run("register_model", register_model, tuned, prepared)


def run_pipeline(
    settings: Settings,
    *,
    data_uri: str | None = None,
    synthetic: bool = False,
    on_step: StepCallback | None = None,
    run_key: str | None = None,
) -> PipelineResult:
    """All steps of `graph.wire` in this process, one after another (the CLI's `train`).

    Tuning trials and the selection metric come from `settings` (see
    `Settings.with_run_options`). Raises what the failing step raised."""
    steps = _InProcess(settings, run_key or new_run_key(), data_uri, synthetic, on_step)
    registered = wire(steps, load_candidates(settings.model_params_path))
    return PipelineResult(registered=registered, timings=steps.timings, **steps.results)


# --- monitoring: drift and live performance of a prediction-log window ------------------------


def _window_key(start: dt.datetime, end: dt.datetime) -> str:
    """A window as a folder name: <start>_<end>, UTC, to the second."""
    return f"{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}"


def _used_features(rows):
    """The 13 features of prediction-log rows as the model used them (`<feature>_used`)."""
    from heart_mlops.predictionlog import USED_SUFFIX

    frame = rows[[name + USED_SUFFIX for name in FEATURES]].astype(float)
    frame.columns = list(FEATURES)
    return frame.reset_index(drop=True)


def _monitor_version(settings: Settings, version: str, rows, challenger_rows) -> dict:
    """One served version's champion `rows` of a window against its own reference: drift
    (with the Evidently HTML when there are enough rows), live metrics, shadow comparison.
    HeartMlopsError naming the version when it has no reference artifact."""
    reference = registry.reference_frame(settings.model_name, version)
    if reference is None:
        raise HeartMlopsError(
            f"version {version} of '{settings.model_name}' has no reference data "
            f"({registry.REFERENCE_ARTIFACT}): it was registered before references were "
            "stored; monitor a window served by a later version"
        )
    holdout = registry.load_champion(settings, version).metrics["holdout"]
    html = None
    if len(rows) >= settings.drift_min_rows:
        current, reference = _used_features(rows), reference.loc[:, list(FEATURES)].astype(float)
        tested, html = monitoring.drift_report(current, reference, settings.drift_share_threshold)
        drift = monitoring.summarise_drift(
            monitoring.feature_drift(current, reference, tested),
            len(rows),
            min_rows=settings.drift_min_rows,
            threshold=settings.drift_share_threshold,
        )
    else:
        drift = monitoring.not_enough_rows(len(rows), settings.drift_min_rows)
    scored = rows[rows["outcome"].notna()]
    threshold = float(rows["threshold"].iloc[-1])
    live = monitoring.live_metrics(
        scored["outcome"].to_numpy(dtype=int),
        scored["probability"].to_numpy(dtype=float),
        threshold,
        samples=settings.bootstrap_samples,
        seed=settings.seed,
    )
    shadow = monitoring.shadow_comparison(
        rows,
        challenger_rows,
        samples=settings.bootstrap_samples,
        seed=settings.seed,
        champion_live=live,
    )
    return {
        "version": version,
        "drift": drift,
        "html": html,
        "live": live,
        "holdout": holdout,
        "comparison": monitoring.holdout_comparison(live, holdout),
        "shadow": shadow,
        "positive_rate": float((rows["prediction"] == 1).mean()),
    }


def _version_entry(found: dict, report_uri: str | None) -> dict:
    """A version's part of the summary JSON (no HTML, features as plain dicts)."""
    drift = found["drift"]
    return {
        "version": found["version"],
        "rows": drift.rows,
        "dataset_drift": drift.dataset_drift,
        "drift_reason": drift.reason,
        "drift_share": drift.drift_share,
        "drifted_features": drift.drifted_features,
        "features": [dataclasses.asdict(f) | {"drifted": f.drifted} for f in drift.features],
        "positive_rate": found["positive_rate"],
        "live": found["live"],
        "holdout_comparison": found["comparison"],
        "shadow": found["shadow"],
        "report_uri": report_uri,
    }


def _window_row(
    settings: Settings, entry: dict, window: tuple, *, summarised: bool, decision: tuple
) -> dict:
    """A monitoring_window row (predictionlog.MONITORING_WINDOWS) of one version's entry."""
    live, shadow = entry["live"] or {}, entry["shadow"] or {}
    challenger = shadow.get("challenger") or {}
    row = {
        "window_start": window[0],
        "window_end": window[1],
        "monitored_at": window[2],
        "model_name": settings.model_name,
        "model_version": entry["version"],
        "summarised": summarised,
        "predictions": entry["rows"],
        "outcomes": live.get("outcomes", 0),
        "positive_rate": entry["positive_rate"],
        "drift_share": entry["drift_share"],
        "dataset_drift": entry["dataset_drift"],
        "drift_reason": entry["drift_reason"],
        "drifted_features": ",".join(entry["drifted_features"]),
        "challenger_version": shadow.get("challenger_version"),
        "shadow_rows": shadow.get("rows"),
        "agreement": shadow.get("agreement"),
        "triggered": decision[0] and summarised,
        "trigger_reason": decision[1] if summarised else "not the version summarised",
        "report_uri": entry["report_uri"],
    }
    for name in predictionlog.LIVE_COLUMNS:
        row |= _interval_columns(f"live_{name}", live.get(name))
        row[f"holdout_{name}"] = entry["holdout_comparison"][name]["holdout"]
    for name in ("roc_auc", "brier"):
        row |= _interval_columns(f"challenger_{name}", challenger.get(name))
    return {key: _finite(value) for key, value in row.items()}


def _interval_columns(prefix: str, figure: dict | None) -> dict:
    figure = figure or {}
    return {f"{prefix}{part}": figure.get(key) for part, key in _PARTS}


_PARTS = (("", "value"), ("_low", "low"), ("_high", "high"))


def _plain(value):
    """A numpy scalar as the Python value JSON can hold."""
    return value.item() if hasattr(value, "item") else str(value)


def _finite(value):
    """NaN (an undefined figure) as None: SQL NULL, JSON null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _feature_rows(version: str, entry: dict) -> list[dict]:
    """monitoring_feature rows (without window_id, window_end) of one version's entry."""
    keep = {c.name for c in predictionlog.MONITORING_FEATURES.columns} - {"window_id", "window_end"}
    return [
        {k: _finite(v) for k, v in feature.items() if k in keep} | {"model_version": version}
        for feature in entry["features"]
    ]


def monitor(
    settings: Settings,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Monitored:
    """Drift and live performance of the prediction log's window [since, until) (aware or
    naive UTC; default: one period of HEART_MLOPS_MONITOR_SCHEDULE ending at `now`, which
    defaults to the current time), per served version against its own reference.

    Writes the Evidently HTML report of each version and the summary JSON under the window's
    own prefix in the artifact store (monitoring/<start>_<end>/), one run of the MLflow
    experiment `monitoring`, and the rows of monitoring_window and monitoring_feature in the
    log's database. The result summarises the latest version served in the window (the one
    a retrain would replace); `versions` lists each. An empty window succeeds with "no
    predictions in window" and triggers nothing.

    HeartMlopsError when a served version has no reference artifact (named), when
    since >= until; RegistryError, StorageError, SQLAlchemy errors when a store fails."""
    now = predictionlog.as_utc(now or dt.datetime.now(dt.UTC))
    default_start, default_end = monitoring.schedule_window(settings.monitor_schedule, now)
    start = predictionlog.as_utc(since) if since else None
    end = predictionlog.as_utc(until) if until else now if since else default_end
    start = start or (end - (default_end - default_start))
    if start >= end:
        raise HeartMlopsError(
            f"--since {start.isoformat()} must be before --until {end.isoformat()}"
        )
    engine = predictionlog.create_log_engine(settings.prediction_log_url)
    predictionlog.migrate(engine)
    frame = predictionlog.read_log(engine, predictionlog.Window(start, end))
    champion = frame[frame["role"] == "champion"]
    challenger = frame[frame["role"] == "challenger"]
    prefix = storage.join(settings.artifact_store, "monitoring", _window_key(start, end))
    versions = sorted(champion["model_version"].unique(), key=_version_order)
    registry.connect(settings)
    found = [
        _monitor_version(
            settings,
            version,
            champion[champion["model_version"] == version],
            challenger[challenger["request_id"].isin(champion["request_id"])],
        )
        for version in versions
    ]
    entries = []
    for item in found:
        uri = None
        if item["html"] is not None:
            uri = storage.join(prefix, f"drift-report-v{item['version']}.html")
            storage.write_bytes(uri, item["html"].encode())
        entries.append(_version_entry(item, uri))
    return _conclude(settings, engine, entries, found, (start, end, now), prefix)


def _version_order(version: str) -> tuple:
    return (0, int(version), "") if str(version).isdigit() else (1, 0, str(version))


def _decide(settings: Settings, engine, found: list[dict], window: tuple) -> tuple:
    """The latest version's drift and the decision on it. -> (DriftSummary, (triggered,
    reason))"""
    start, end, now = window
    if not found:
        drift = monitoring.not_enough_rows(0, settings.drift_min_rows)
        drift = dataclasses.replace(drift, reason="no predictions in window")
        return drift, (False, "no trigger: no predictions in window")
    drift = found[-1]["drift"]
    return drift, monitoring.retrain_decision(
        drift,
        found[-1]["live"],
        roc_auc_floor=settings.live_roc_auc_floor,
        min_outcomes=settings.live_min_outcomes,
        last_trigger=predictionlog.last_trigger(engine, settings.model_name, (start, end)),
        now=now,
        cooldown_hours=settings.retrain_cooldown_hours,
    )


# an empty window is a point on the dashboard too: 0 predictions, no version
_EMPTY_ENTRY = {
    "version": "", "rows": 0, "positive_rate": None, "drift_share": None,
    "dataset_drift": False, "drifted_features": [], "features": [], "live": None,
    "shadow": None, "report_uri": None,
    "holdout_comparison": monitoring.holdout_comparison(None, {}),
}  # fmt: skip


def _table_rows(settings: Settings, summary: dict, window: tuple, decision: tuple) -> tuple:
    """The monitoring_window rows and, for each, its monitoring_feature rows."""
    entries = summary["versions"] or [_EMPTY_ENTRY | {"drift_reason": summary["drift_reason"]}]
    written = {"summary_uri": summary["summary_uri"], "mlflow_run_id": summary["mlflow_run_id"]}
    last = len(entries) - 1
    windows = [
        _window_row(settings, entry, window, summarised=index == last, decision=decision) | written
        for index, entry in enumerate(entries)
    ]
    return windows, [_feature_rows(entry["version"], entry) for entry in entries]


def _conclude(settings, engine, entries, found, window, prefix) -> Monitored:
    """The decision on the latest version, the MLflow run, the summary and the table rows."""
    start, end, _ = window
    drift, decision = _decide(settings, engine, found, window)
    latest = entries[-1] if entries else {}
    live = latest.get("live")
    summary = {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "rows": sum(entry["rows"] for entry in entries),
        "dataset_drift": drift.dataset_drift,
        "drift_reason": drift.reason,
        "drift_share": drift.drift_share,
        "drifted_features": drift.drifted_features,
        "live": None if live is None else live | {"holdout": latest["holdout_comparison"]},
        "triggered": decision[0],
        "trigger_reason": decision[1],
        "report_uri": latest.get("report_uri"),
        "summary_uri": storage.join(prefix, "summary.json"),
        "model_version": latest.get("version"),
        "versions": entries,
    }
    # numpy scalars as Python ones, NaN (an undefined figure) as null
    summary = json.loads(json.dumps(summary, default=_plain), parse_constant=lambda _: None)
    summary["mlflow_run_id"] = registry.monitoring_run(
        settings,
        f"monitor {_window_key(start, end)}",
        tags={
            "window_start": summary["window_start"],
            "window_end": summary["window_end"],
            "model_version": summary["model_version"],
            "triggered": str(decision[0]).lower(),
        },
        metrics=_run_metrics(summary),
        texts={f"drift-report-v{i['version']}.html": i["html"] for i in found if i["html"]},
        documents={"summary.json": summary},
    )
    storage.write_json(summary["summary_uri"], summary)
    predictionlog.write_monitoring(engine, *_table_rows(settings, summary, window, decision))
    log.info("monitor %s: %s; %s", _window_key(start, end), drift.reason, decision[1])
    return Monitored(**{k: summary[k] for k in _MONITORED_FIELDS})


_MONITORED_FIELDS = tuple(f.name for f in dataclasses.fields(Monitored))


def _run_metrics(summary: dict) -> dict[str, float]:
    """The summary's numbers as metrics of the monitoring run."""
    metrics = {"rows": summary["rows"], "drift_share": summary["drift_share"]}
    for name, figure in (summary["live"] or {}).items():
        if isinstance(figure, dict) and "value" in figure:
            metrics[f"live_{name}"] = figure["value"]
    return metrics


def expire_predictions(settings: Settings, *, now: dt.datetime | None = None) -> int:
    """Delete prediction-log records older than HEART_MLOPS_PREDICTION_LOG_RETENTION_DAYS
    before `now` (default: the current time), and their outcomes (predictionlog.delete_expired).
    -> records deleted. SQLAlchemy errors when the database cannot be reached."""
    engine = predictionlog.create_log_engine(settings.prediction_log_url)
    predictionlog.migrate(engine)
    return predictionlog.delete_expired(engine, settings.prediction_log_retention_days, now)
