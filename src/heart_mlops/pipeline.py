"""The pipeline as plain functions, one per step. The DAG and the CLI both call these.

Each step takes small JSON-able dicts (URIs, metrics, run ids) and returns one; data and
models move through the artifact store under the pipeline run's own prefix.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow

from heart_mlops import __version__, registry, storage, tuning
from heart_mlops.data import load_bytes, sha256, synthetic_csv
from heart_mlops.errors import DataError, StorageError
from heart_mlops.evaluation import (
    cross_validated,
    holdout_metrics,
    metrics_by_sex,
    model_card,
    save_plots,
    split_holdout,
    xy,
)
from heart_mlops.models import load_candidates
from heart_mlops.settings import Settings

log = logging.getLogger(__name__)
TAG = registry.TAG_PREFIX


def new_run_key(prefix: str = "local") -> str:
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


def _run_tags(extracted: dict, **extra) -> dict:
    return {
        "mlflow.parentRunId": extracted["parent_run_id"],
        f"{TAG}pipeline_run": extracted["run_key"],
        f"{TAG}synthetic": str(extracted["synthetic"]).lower(),
        **extra,
    }


def extract_data(
    settings: Settings, *, run_key: str, data_uri: str | None = None, synthetic: bool = False
) -> dict:
    """Copy the source data (or seeded synthetic data, only when asked) into the run's prefix."""
    experiment_id = registry.configure(settings)
    source = "synthetic" if synthetic else (data_uri or settings.data_uri)
    if synthetic:
        log.warning(
            "using SYNTHETIC data (seed %d): its model will never become champion", settings.seed
        )
        raw = synthetic_csv(seed=settings.seed)
    else:
        try:
            raw = storage.read_bytes(source)
        except StorageError as exc:
            if "no such" in str(exc) or "directory" in str(exc):
                raise DataError(f"cannot read the training data: {exc}") from None
            raise
    prefix = storage.join(settings.artifact_store, "runs", _safe_key(run_key))
    storage.ensure_bucket_of(prefix)
    raw_uri = storage.write_bytes(storage.join(prefix, "raw", "data.csv"), raw)
    parent = _pipeline_run(experiment_id, run_key, source, synthetic)
    log.info("extracted %d bytes from %s to %s", len(raw), source, raw_uri)
    return {
        "run_key": run_key,
        "prefix": prefix,
        "raw_uri": raw_uri,
        "source": source,
        "synthetic": synthetic,
        "parent_run_id": parent,
        "sha256": sha256(raw),
    }


def _pipeline_run(experiment_id: str, run_key: str, source: str, synthetic: bool) -> str:
    """The pipeline's parent MLflow run; a rerun of the same pipeline run reuses it."""
    client = registry.client()
    found = client.search_runs(
        [experiment_id],
        f"tags.`{TAG}pipeline_run` = '{run_key}' and tags.`{TAG}step` = 'pipeline'",
        max_results=1,
    )
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline {run_key}",
        tags={
            f"{TAG}pipeline_run": run_key,
            f"{TAG}step": "pipeline",
            f"{TAG}source": source,
            f"{TAG}synthetic": str(synthetic).lower(),
            f"{TAG}code_version": __version__,
        },
    )
    return run.info.run_id


def preprocess_data(settings: Settings, extracted: dict) -> dict:
    """Validate, clean, deduplicate, split; write Parquet splits. DataError on invalid data."""
    with _failing(extracted["parent_run_id"]):
        registry.configure(settings)
        dataset = load_bytes(storage.read_bytes(extracted["raw_uri"]))
        train, holdout = split_holdout(dataset.frame, settings.holdout_fraction, settings.seed)
        prefix = extracted["prefix"]
        prepared = {
            **extracted,
            "validated_uri": storage.write_frame(
                storage.join(prefix, "validated.parquet"), dataset.frame
            ),
            "train_uri": storage.write_frame(storage.join(prefix, "train.parquet"), train),
            "holdout_uri": storage.write_frame(storage.join(prefix, "holdout.parquet"), holdout),
            "fingerprint": dataset.fingerprint,
            "rows_train": len(train),
            "rows_holdout": len(holdout),
        }
        storage.write_json(storage.join(prefix, "reports", "data.json"), prepared)
        client = registry.client()
        for key, value in {
            **dataset.fingerprint,
            "rows_train": len(train),
            "rows_holdout": len(holdout),
        }.items():
            client.log_param(extracted["parent_run_id"], f"data_{key}", value)
        return prepared


def train_candidate(settings: Settings, name: str, prepared: dict) -> dict:
    """Fit one candidate on the training part; store it; open its MLflow run."""
    with _failing(prepared["parent_run_id"]):
        registry.configure(settings)
        candidate = load_candidates(settings.model_params_path)[name]
        model = candidate.build(seed=settings.seed)
        train = storage.read_frame(prepared["train_uri"])
        started = time.perf_counter()
        model.fit(*xy(train))
        fit_seconds = time.perf_counter() - started
        model_uri = storage.write_bytes(
            storage.join(prepared["prefix"], "models", f"{name}.skops"), registry.serialize(model)
        )
        with mlflow.start_run(
            run_name=name,
            tags=_run_tags(prepared, **{f"{TAG}step": "candidate", f"{TAG}candidate": name}),
        ) as run:
            mlflow.log_params(model[-1].get_params())
            mlflow.log_metric("fit_seconds", fit_seconds)
        return {
            "name": name,
            "model_uri": model_uri,
            "run_id": run.info.run_id,
            "params": {**candidate.params},
        }


def evaluate_candidate(settings: Settings, trained: dict, prepared: dict) -> dict:
    """CV on the training part, holdout metrics (reported, not used to select), plots."""
    with _failing(prepared["parent_run_id"]):
        registry.configure(settings)
        model = registry.deserialize(storage.read_bytes(trained["model_uri"]))
        train = storage.read_frame(prepared["train_uri"])
        holdout = storage.read_frame(prepared["holdout_uri"])
        scores = cross_validated(
            model,
            train,
            folds=settings.cv_folds,
            repeats=settings.cv_repeats,
            seed=settings.seed,
            n_jobs=settings.n_jobs,
        )
        scores |= holdout_metrics(model, holdout, settings.threshold)
        with mlflow.start_run(run_id=trained["run_id"]), tempfile.TemporaryDirectory() as tmp:
            mlflow.log_metrics(scores)
            for path in save_plots(model, holdout, settings.threshold, Path(tmp)):
                mlflow.log_artifact(str(path), artifact_path="plots")
        storage.write_json(
            storage.join(prepared["prefix"], "reports", f"evaluation_{trained['name']}.json"),
            scores,
        )
        return {**trained, "metrics": scores}


def select_best_model(
    settings: Settings,
    evaluations: list[dict],
    metric: str | None = None,
    parent_run_id: str | None = None,
) -> dict:
    """The candidate with the best mean CV score of the selection metric."""
    metric = metric or settings.selection_metric
    key = f"cv_{metric}_mean"
    ranking = sorted(evaluations, key=lambda e: e["metrics"][key], reverse=True)
    best = ranking[0]
    log.info("best candidate by %s: %s (%.4f)", key, best["name"], best["metrics"][key])
    if parent_run_id:
        registry.configure(settings)
        registry.client().set_tag(parent_run_id, f"{TAG}best_candidate", best["name"])
    return {
        **best,
        "selection_metric": metric,
        "ranking": [{"name": e["name"], key: e["metrics"][key]} for e in ranking],
    }


def tune_best_model(
    settings: Settings, best: dict, prepared: dict, trials: int | None = None
) -> dict:
    """Search the winner's space; re-score tuned and untuned on fresh folds; keep the better."""
    trials = settings.tuning_trials if trials is None else trials
    metric = best["selection_metric"]
    with _failing(prepared["parent_run_id"]):
        registry.configure(settings)
        candidate = load_candidates(settings.model_params_path)[best["name"]]
        train = storage.read_frame(prepared["train_uri"])
        tuned_params: dict = {}
        with mlflow.start_run(
            run_name=f"tune {best['name']}",
            tags=_run_tags(prepared, **{f"{TAG}step": "tuning", f"{TAG}candidate": best["name"]}),
        ):
            if trials > 0 and candidate.search:
                tuned_params, _ = tuning.search(
                    candidate, train, settings, trials=trials, metric=metric
                )
            # fresh folds (another seed than the search used) for an unbiased comparison
            rescore = dict(
                folds=settings.cv_folds,
                repeats=settings.cv_repeats,
                seed=settings.seed + 1,
                n_jobs=settings.n_jobs,
            )
            untuned_cv = cross_validated(candidate.build(seed=settings.seed), train, **rescore)
            tuned_cv = (
                cross_validated(candidate.build(tuned_params, seed=settings.seed), train, **rescore)
                if tuned_params
                else None
            )
            key = f"cv_{metric}_mean"
            use_tuned = tuned_cv is not None and tuned_cv[key] > untuned_cv[key]
            label = "tuned" if use_tuned else "untuned"
            chosen_cv = tuned_cv if use_tuned else untuned_cv
            mlflow.log_params({f"tuned_{k}": v for k, v in tuned_params.items()})
            mlflow.log_metrics(
                {
                    f"untuned_{key}": untuned_cv[key],
                    **({f"tuned_{key}": tuned_cv[key]} if tuned_cv else {}),
                }
            )
            mlflow.set_tag(f"{TAG}choice", label)
        params = {**candidate.params, **(tuned_params if use_tuned else {})}
        model = candidate.build(params, seed=settings.seed).fit(*xy(train))
        model_uri = storage.write_bytes(
            storage.join(prepared["prefix"], "models", "final.skops"), registry.serialize(model)
        )
        log.info(
            "registering the %s %s (%s %.4f vs untuned %.4f)",
            label,
            best["name"],
            key,
            chosen_cv[key],
            untuned_cv[key],
        )
        return {
            "name": best["name"],
            "label": label,
            "params": params,
            "model_uri": model_uri,
            "cv": chosen_cv,
            "selection_metric": metric,
            "trials": trials,
        }


def register_model(settings: Settings, tuned: dict, prepared: dict) -> dict:
    """Log and register the chosen model with its model card; promote it if it beats champion."""
    name = settings.model_name
    with _failing(prepared["parent_run_id"]):
        registry.configure(settings)
        existing = registry.version_for_pipeline_run(name, prepared["run_key"])
        holdout = storage.read_frame(prepared["holdout_uri"])
        model = registry.deserialize(storage.read_bytes(tuned["model_uri"]))
        holdout_scores = holdout_metrics(model, holdout, settings.threshold)
        if existing is None:
            version = _log_and_register(settings, model, tuned, prepared, holdout, holdout_scores)
        else:
            log.info(
                "pipeline run %s already registered version %s",
                prepared["run_key"],
                existing.version,
            )
            version = registry.version_of(existing)

        def score(candidate_model) -> float:
            return holdout_metrics(candidate_model, holdout, settings.threshold)[
                registry.PROMOTION_METRIC
            ]

        promotion = registry.promote_if_better(
            name,
            version,
            score,
            allow=not prepared["synthetic"],
            blocked_reason="trained on synthetic data: never champion",
        )
        registry.end_run(prepared["parent_run_id"])
        result = {
            "model_name": name,
            "version": version,
            "champion": promotion.promoted,
            "decision": promotion.reason,
            "candidate": tuned["name"],
            "label": tuned["label"],
            "params": tuned["params"],
            "cv": tuned["cv"],
            "holdout": holdout_scores,
            "synthetic": prepared["synthetic"],
            "run_key": prepared["run_key"],
        }
        storage.write_json(storage.join(prepared["prefix"], "reports", "registration.json"), result)
        return result


def _log_and_register(settings, model, tuned, prepared, holdout, holdout_scores) -> str:
    by_sex = metrics_by_sex(model, holdout, settings.threshold)
    with (
        mlflow.start_run(
            run_name=f"register {tuned['name']}",
            tags=_run_tags(
                prepared,
                **{
                    f"{TAG}step": "register",
                    f"{TAG}candidate": tuned["name"],
                    f"{TAG}tuning_label": tuned["label"],
                },
            ),
        ) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        mlflow.log_params(tuned["params"])
        mlflow.log_params(
            {
                "threshold": settings.threshold,
                "candidate": tuned["name"],
                "tuning_label": tuned["label"],
            }
        )
        mlflow.log_metrics({**tuned["cv"], **holdout_scores})
        mlflow.log_dict(prepared["fingerprint"], "data_fingerprint.json")
        for path in save_plots(model, holdout, settings.threshold, Path(tmp)):
            mlflow.log_artifact(str(path), artifact_path="plots")
        model_uri = registry.log_model(model, holdout)
        card = model_card(
            model_name=settings.model_name,
            version=None,
            candidate=tuned["name"],
            params=tuned["params"],
            fingerprint=prepared["fingerprint"],
            cv=tuned["cv"],
            holdout=holdout_scores,
            by_sex=by_sex,
            threshold=settings.threshold,
            synthetic=prepared["synthetic"],
        )
        mlflow.log_text(card, "model_card.md")
    fp = prepared["fingerprint"]
    registered = registry.register(
        model_uri,
        settings.model_name,
        {
            "pipeline_run": prepared["run_key"],
            "run_id": run.info.run_id,
            "candidate": tuned["name"],
            "tuning_label": tuned["label"],
            "threshold": settings.threshold,
            "synthetic": str(prepared["synthetic"]).lower(),
            "data_sha256": fp["sha256"],
            "data_rows_raw": fp["rows_raw"],
            "data_rows_distinct": fp["rows_distinct"],
            "code_version": __version__,
            **{k: f"{v:.6f}" for k, v in {**tuned["cv"], **holdout_scores}.items()},
        },
    )
    version = registry.version_of(registered)
    registry.client().update_model_version(
        settings.model_name,
        version,
        description=f"{tuned['label']} {tuned['name']}, data sha256 {fp['sha256'][:12]}",
    )
    return version


StepCallback = Callable[[str, float, dict], None]


def run_pipeline(
    settings: Settings,
    *,
    data_uri: str | None = None,
    synthetic: bool = False,
    trials: int | None = None,
    metric: str | None = None,
    on_step: StepCallback | None = None,
    run_key: str | None = None,
) -> dict:
    """All steps in this process, one after another (the CLI's `train`)."""
    timings: dict[str, float] = {}

    def step(name: str, fn, *args, **kwargs):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - started
        if on_step:
            on_step(name, timings[name], result if isinstance(result, dict) else {})
        return result

    extracted = step(
        "extract_data",
        extract_data,
        settings,
        run_key=run_key or new_run_key(),
        data_uri=data_uri,
        synthetic=synthetic,
    )
    prepared = step("preprocess_data", preprocess_data, settings, extracted)
    evaluations = []
    for name in load_candidates(settings.model_params_path):
        trained = step(f"train_{name}", train_candidate, settings, name, prepared)
        evaluations.append(
            step(f"evaluate_{name}", evaluate_candidate, settings, trained, prepared)
        )
    best = step(
        "select_best_model",
        select_best_model,
        settings,
        evaluations,
        metric,
        prepared["parent_run_id"],
    )
    tuned = step("tune_best_model", tune_best_model, settings, best, prepared, trials)
    registered = step("register_model", register_model, settings, tuned, prepared)
    return {
        "evaluations": evaluations,
        "best": best,
        "tuned": tuned,
        "registered": registered,
        "timings": timings,
        "data": prepared,
    }
