"""MLflow: experiment, runs, logged models with signature, the registry and its aliases.

Promotion rule: the alias `champion` moves to a new version only if that version beats the
current champion on the same holdout rows, both scored now. Otherwise the new version gets
`challenger`. Scores and the decision are version tags, so the registry keeps the history.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import AnyType, ColSpec, Schema

from heart_mlops import __version__
from heart_mlops.data import FEATURES, LABEL
from heart_mlops.errors import RegistryError
from heart_mlops.settings import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "heart_mlops."
PROMOTION_METRIC = "holdout_roc_auc"
# what MLflow runs to load a logged model, and the name of its pipeline artifact
MODEL_CODE = Path(__file__).with_name("pyfunc_model_code.py")
PIPELINE_ARTIFACT = "pipeline"
# the training rows a version was fitted on (13 features and the label, CSV): the reference of
# its explanations and of drift checks
REFERENCE_ARTIFACT = "reference_data"
REFERENCE_FILE = "reference.csv"


def connect(settings: Settings) -> None:
    """Point MLflow at the configured tracking and registry store (reads only)."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        settings.home_dir.mkdir(parents=True, exist_ok=True)
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # MLflow exports the URI to the environment; keep the environment the user's, so Settings
    # created later in this process read their own configuration
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def configure(settings: Settings) -> str:
    """`connect`, and create the experiment if needed. -> experiment id"""
    connect(settings)
    uri = settings.tracking_uri
    try:
        experiment_id = _experiment_id(settings, settings.experiment_name)
        # runs started with mlflow.start_run() go to this experiment, not "Default"
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id
    except MlflowException as exc:
        raise RegistryError(f"MLflow at {_safe_uri(uri)} failed: {exc.message}") from None


def _experiment_id(settings: Settings, name: str) -> str:
    """The id of experiment `name`, created if needed (artifacts under HOME/mlruns when the
    tracking store is SQLite). MlflowException when MLflow fails."""
    experiment = client().get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    uri = settings.tracking_uri
    location = settings.mlflow_artifacts_dir.as_uri() if uri.startswith("sqlite:") else None
    return client().create_experiment(name, artifact_location=location)


MONITORING_EXPERIMENT = "monitoring"


def monitoring_run(
    settings: Settings,
    name: str,
    *,
    tags: dict[str, Any],
    metrics: dict[str, float],
    texts: dict[str, str],
    documents: dict[str, dict],
) -> str:
    """One finished run of the `monitoring` experiment (created if needed): this project's
    `tags`, the finite `metrics`, `texts` (artifact name -> text, e.g. the drift report's
    HTML) and `documents` (artifact name -> JSON-able dict). -> the run id. RegistryError when
    MLflow fails."""
    connect(settings)
    uri = settings.tracking_uri
    try:
        experiment_id = _experiment_id(settings, MONITORING_EXPERIMENT)
        run_id = client().create_run(experiment_id, run_name=name, tags=tag_names(tags)).info.run_id
        timestamp = int(time.time() * 1000)
        finite = [
            Metric(key, float(value), timestamp, 0)
            for key, value in metrics.items()
            if value is not None and math.isfinite(value)
        ]
        if finite:
            client().log_batch(run_id, metrics=finite)
        for artifact, text in texts.items():
            client().log_text(run_id, text, artifact)
        for artifact, document in documents.items():
            client().log_dict(run_id, document, artifact)
        client().set_terminated(run_id, "FINISHED")
        return run_id
    except MlflowException as exc:
        raise RegistryError(f"MLflow at {_safe_uri(uri)} failed: {exc.message}") from None


def _safe_uri(uri: str) -> str:
    """The URI without credentials, for messages."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def serialize(model) -> bytes:
    """A fitted pipeline as skops bytes (not pickle) for the artifact store; see `deserialize`."""
    import skops.io as sio  # imports scikit-learn: not on the API's start path

    return sio.dumps(model)


def deserialize(payload: bytes):
    """Load a model this project wrote (its own artifact store), trusting its own types."""
    import skops.io as sio

    return sio.loads(payload, trusted=sio.get_untrusted_types(data=payload))


def input_example(frame: pd.DataFrame) -> pd.DataFrame:
    """The first 3 rows of the 13 FEATURES columns as float64: the logged model's example and
    the source of its signature. KeyError when a feature column is missing."""
    return frame.loc[:, list(FEATURES)].astype("float64").head(3)


def signature(model, example: pd.DataFrame) -> ModelSignature:
    """The 13 features by name, each of MLflow's type `any` (int and float columns both reach
    `ClinicalModel`, which checks them); out: an array (n, 2), P(no disease), P(disease)."""
    inputs = Schema([ColSpec(AnyType(), name) for name in FEATURES])
    return ModelSignature(inputs, infer_signature(example, model.predict_proba(example)).outputs)


def log_model(
    model,
    example: pd.DataFrame,
    *,
    name: str = "model",
    threshold: float = 0.5,
    reference: pd.DataFrame | None = None,
) -> str:
    """Log the pipeline to the active run as `pyfunc_model.ClinicalModel` (models from code),
    the pipeline its skops artifact: int or float columns in (NaN = missing), values outside
    the feature table refused, P(no disease), P(disease) out. With it, its ONNX form and probe
    rows when it converts and agrees at `threshold` (`onnx_files`), and `reference`, the
    training rows it was fitted on (the 13 FEATURES and LABEL), as REFERENCE_ARTIFACT.

    -> the logged model's URI
    """
    example = input_example(example)
    with tempfile.TemporaryDirectory() as folder:
        pipeline = Path(folder) / "pipeline.skops"
        pipeline.write_bytes(serialize(model))
        artifacts = {PIPELINE_ARTIFACT: str(pipeline), **onnx_files(model, threshold, folder)}
        if reference is not None:
            artifacts[REFERENCE_ARTIFACT] = str(Path(folder) / REFERENCE_FILE)
            reference.loc[:, [*FEATURES, LABEL]].to_csv(artifacts[REFERENCE_ARTIFACT], index=False)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=MODEL_CODE,
            artifacts=artifacts,
            signature=signature(model, example),
            input_example=example,
            pip_requirements=_requirements(),
        )
    return info.model_uri


def onnx_files(model, threshold: float, folder: str | Path) -> dict[str, str]:
    """The pipeline's ONNX form, its probe rows with their expected P(disease), and what
    /model/info says of it, written to `folder`: {artifact name: path}, as
    onnx_model.ARTIFACT_FILES names them. Empty, with a log line saying why, when the pipeline
    does not convert or its ONNX form disagrees (onnx_export.export): the version is then
    served by scikit-learn."""
    from heart_mlops import onnx_model

    try:
        from heart_mlops.onnx_export import ConversionError, export
    except ImportError as exc:  # installed without the serve or airflow extra
        log.warning("not converted to ONNX (%s); scikit-learn will serve this version", exc)
        return {}
    try:
        onnx_bytes, probe = export(model, threshold)
    except ConversionError as exc:
        log.warning("not converted to ONNX (%s); scikit-learn will serve this version", exc)
        return {}
    contents = {
        onnx_model.ONNX_ARTIFACT: onnx_bytes,
        onnx_model.PROBE_ARTIFACT: probe.to_bytes(),
        onnx_model.INFO_ARTIFACT: onnx_model.describe(model),
    }
    paths = {}
    for artifact, payload in contents.items():
        path = Path(folder) / onnx_model.ARTIFACT_FILES[artifact]
        path.write_bytes(payload)
        paths[artifact] = str(path)
    return paths


def version_files(model_name: str, version: str, names: list[str]) -> dict[str, bytes] | None:
    """The files `names` (onnx_model.ARTIFACT_FILES keys, or REFERENCE_ARTIFACT) logged with a
    version's model, or None when the version lacks the first of them (logged before they
    existed, or its conversion failed).

    MlflowException when the registry or the artifact store cannot be read."""
    from heart_mlops.onnx_model import ARTIFACT_FILES

    files = {**ARTIFACT_FILES, REFERENCE_ARTIFACT: REFERENCE_FILE}
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{model_name}/{version}/artifacts/{files[names[0]]}",
                dst_path=folder,
            )
        except (MlflowException, OSError):
            return None
        found = {names[0]: Path(local).read_bytes()}
        for artifact in names[1:]:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{model_name}/{version}/artifacts/{files[artifact]}",
                dst_path=folder,
            )
            found[artifact] = Path(local).read_bytes()
    return found


def reference_frame(model_name: str, version: str) -> pd.DataFrame | None:
    """The training rows logged with a version (REFERENCE_ARTIFACT: the 13 FEATURES and LABEL,
    NaN = missing), or None for a version logged before they were.

    MlflowException when the registry or the artifact store cannot be read."""
    files = version_files(model_name, version, [REFERENCE_ARTIFACT])
    return None if files is None else pd.read_csv(io.BytesIO(files[REFERENCE_ARTIFACT]))


def _requirements() -> list[str]:
    """Pinned runtime of the model; stated, so MLflow need not infer it in a subprocess."""
    from importlib.metadata import version

    return [
        f"{dist}=={version(dist)}"
        for dist in ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "heart-mlops")
    ]


def client() -> MlflowClient:
    """An MlflowClient of the tracking and registry URIs set by `connect`."""
    return MlflowClient()


def tag_names(tags: dict[str, Any]) -> dict[str, str]:
    """This project's tags as MLflow stores them: names under TAG_PREFIX, values as text."""
    return {f"{TAG_PREFIX}{key}": str(value) for key, value in tags.items()}


def untagged(tags: dict[str, str]) -> dict[str, str]:
    """This project's tags of an MLflow run or version, without TAG_PREFIX; others dropped."""
    return {k.removeprefix(TAG_PREFIX): v for k, v in tags.items() if k.startswith(TAG_PREFIX)}


# --- runs: the pipeline's parent run and one run per step ------------------------------------


def pipeline_run(
    experiment_id: str,
    run_key: str,
    source: str,
    synthetic: bool,
    trigger: dict[str, str] | None = None,
) -> str:
    """The pipeline's parent MLflow run, found by its run key or created. -> MLflow run id.
    `trigger`: more of this project's tags, saying why the run runs.

    A rerun of the same pipeline run (an Airflow retry) reuses the run and marks it RUNNING.
    """
    found = client().search_runs(
        [experiment_id],
        f"tags.`{TAG_PREFIX}pipeline_run` = '{run_key}' and tags.`{TAG_PREFIX}step` = 'pipeline'",
        max_results=1,
    )
    if found:
        client().update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    tags = {
        "pipeline_run": run_key,
        "step": "pipeline",
        "source": source,
        "synthetic": str(synthetic).lower(),
        "code_version": __version__,
        **(trigger or {}),
    }
    run = client().create_run(experiment_id, run_name=f"pipeline {run_key}", tags=tag_names(tags))
    return run.info.run_id


def log_run_params(run_id: str, params: dict[str, Any]) -> None:
    """Log parameters to a run that need not be active (the pipeline's parent run)."""
    for key, value in params.items():
        client().log_param(run_id, key, value)


def set_run_tag(run_id: str, key: str, value: Any) -> None:
    """Set one of this project's tags on a run that need not be active."""
    client().set_tag(run_id, f"{TAG_PREFIX}{key}", str(value))


@contextlib.contextmanager
def step_run(
    name: str, *, parent_run_id: str, pipeline_run: str, synthetic: bool, tags: dict[str, Any]
) -> Iterator[str]:
    """An active MLflow run of one step, child of the pipeline's run. -> its run id.

    `tags` are this project's (TAG_PREFIX is added). While it is active, `log_params`,
    `log_metrics`, `log_files`, `log_json`, `log_text`, `set_tag`, `log_trial` and
    `log_model` write to it.
    """
    all_tags = {
        "mlflow.parentRunId": parent_run_id,
        **tag_names({"pipeline_run": pipeline_run, "synthetic": str(synthetic).lower(), **tags}),
    }
    with mlflow.start_run(run_name=name, tags=all_tags) as run:
        yield run.info.run_id


@contextlib.contextmanager
def resumed_run(run_id: str) -> Iterator[str]:
    """The run `run_id` active again (a later step adds to a candidate's run). -> run id"""
    with mlflow.start_run(run_id=run_id) as run:
        yield run.info.run_id


@contextlib.contextmanager
def search_run(name: str, tags: dict[str, Any]) -> Iterator[str]:
    """An active top-level MLflow run (a search alone, outside a pipeline run). -> run id"""
    with mlflow.start_run(run_name=name, tags=tag_names(tags)) as run:
        yield run.info.run_id


def log_params(params: dict[str, Any]) -> None:
    """Parameters of the active run."""
    mlflow.log_params(params)


def log_metrics(metrics: dict[str, float]) -> None:
    """Metrics of the active run."""
    mlflow.log_metrics(metrics)


def set_tag(key: str, value: Any) -> None:
    """One of this project's tags on the active run."""
    mlflow.set_tag(f"{TAG_PREFIX}{key}", str(value))


def log_files(paths: list[Path], folder: str) -> None:
    """Files (plots) as artifacts of the active run, under `folder`."""
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=folder)


def log_json(payload: dict, name: str) -> None:
    """A dict as a JSON artifact `name` of the active run."""
    mlflow.log_dict(payload, name)


def load_json(run_id: str, name: str) -> Any:
    """The JSON artifact `name` of run `run_id` (as log_json wrote it). RegistryError when the
    run has no such artifact or the store fails."""
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{name}")
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"run {run_id} has no artifact {name}: {exc}") from None


def log_text(text: str, name: str) -> None:
    """Text (the model card) as an artifact `name` of the active run."""
    mlflow.log_text(text, name)


def log_trial(number: int, params: dict[str, Any], metric: str, score: float) -> None:
    """One tuning trial as a nested run of the active run: its parameters and CV score."""
    with mlflow.start_run(run_name=f"trial_{number}", nested=True):
        mlflow.log_params(params)
        mlflow.log_metric(f"cv_{metric}_mean", score)


def version_by_alias(model_name: str, alias: str):
    """The ModelVersion behind an alias, or None. (Its .version may be an int: compare with
    `version_of`.)"""
    try:
        return client().get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise RegistryError(f"MLflow registry failed: {exc.message}") from None


def version_for_pipeline_run(model_name: str, pipeline_run: str):
    """The version a pipeline run already registered, if any (reruns register once)."""
    try:
        found = client().search_model_versions(
            f"name = '{model_name}' and tags.`{TAG_PREFIX}pipeline_run` = '{pipeline_run}'"
        )
    except MlflowException:
        return None
    return found[0] if found else None


def version_of(model_version) -> str | None:
    """A version number as a string (MLflow stores differ), None for no version."""
    return None if model_version is None else str(model_version.version)


def register(
    model_uri: str, model_name: str, tags: dict[str, Any], description: str | None = None
) -> str:
    """Register a logged model as a new version with this project's `tags`. -> the version"""
    try:
        client().get_registered_model(model_name)
    except MlflowException:
        with contextlib.suppress(MlflowException):  # another run may create it meanwhile
            client().create_registered_model(
                model_name, description="Heart-disease classifier: P(disease) from 13 features."
            )
    registered = mlflow.register_model(model_uri, model_name, tags=tag_names(tags))
    version = str(registered.version)
    if description:
        client().update_model_version(model_name, version, description=description)
    return version


def version_tags(
    *,
    pipeline_run: str,
    run_id: str,
    candidate: str,
    tuning_label: str,
    threshold: float,
    synthetic: bool,
    fingerprint: dict[str, Any],
    scores: dict[str, float],
) -> dict[str, str]:
    """The tags a pipeline gives the version it registers (read back by `load_champion`).

    `fingerprint`: data.Dataset.fingerprint; `scores`: cv_* and holdout_* metrics."""
    return {
        "pipeline_run": pipeline_run,
        "run_id": run_id,
        "candidate": candidate,
        "tuning_label": tuning_label,
        "threshold": str(threshold),
        "synthetic": str(synthetic).lower(),
        "data_sha256": fingerprint["sha256"],
        "data_rows_raw": str(fingerprint["rows_raw"]),
        "data_rows_distinct": str(fingerprint["rows_distinct"]),
        "code_version": __version__,
        **{k: f"{v:.6f}" for k, v in scores.items()},
    }


def load_version(model_name: str, version: str):
    """The sklearn Pipeline of a registered version: the one inside its ClinicalModel, or the
    model itself for versions logged before, as MLflow's sklearn flavor.

    MlflowException when the version or its artifacts cannot be read."""
    uri = f"models:/{model_name}/{version}"
    if "sklearn" in mlflow.models.get_model_info(uri).flavors:
        return mlflow.sklearn.load_model(uri)
    return mlflow.pyfunc.load_model(uri).unwrap_python_model().pipeline


@dataclass(frozen=True)
class Champion:
    """A registered version as it is served: its pipeline and what its tags say of it."""

    model_name: str
    version: str
    run_id: str  # the MLflow run that logged the model
    threshold: float  # decision threshold on P(disease) stored with the version
    tags: dict[str, str]  # this project's version tags, without TAG_PREFIX

    @cached_property
    def pipeline(self) -> Any:
        """The sklearn Pipeline (raw clinical values in, predict_proba out), loaded once."""
        return load_version(self.model_name, self.version)

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """{"cv": {cv_<metric>_mean/std: value}, "holdout": {holdout_<metric>: value}}"""
        return {
            part: {k: float(v) for k, v in self.tags.items() if k.startswith(f"{part}_")}
            for part in ("cv", "holdout")
        }

    @property
    def data(self) -> dict[str, str | None]:
        """The training data's fingerprint: sha256, raw and distinct row counts."""
        return {
            "sha256": self.tags.get("data_sha256"),
            "rows_raw": self.tags.get("data_rows_raw"),
            "rows_distinct": self.tags.get("data_rows_distinct"),
        }


def champion_version(model_name: str) -> str | None:
    """The version that holds @champion, None when no version does.

    RegistryError when the registry cannot be read."""
    return version_of(version_by_alias(model_name, CHAMPION))


def load_champion(settings: Settings, version: str | None = None) -> Champion:
    """The champion (or the given version of the model): its tags now, its pipeline when first
    used (`Champion.pipeline`).

    RegistryError when no version holds @champion or the registry fails."""
    name = settings.model_name
    version = version or champion_version(name)
    if version is None:
        raise RegistryError(
            f"no version of '{name}' has the alias @{CHAMPION}; train one with `heart-mlops train`"
        )
    try:
        found = client().get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"MLflow registry failed: {exc.message}") from None
    tags = untagged(found.tags)
    return Champion(
        model_name=name,
        version=str(version),
        run_id=tags.get("run_id") or found.run_id,
        threshold=float(tags.get("threshold", settings.threshold)),
        tags=tags,
    )


def set_version_tags(model_name: str, version: str, tags: dict) -> None:
    """Set this project's `tags` (TAG_PREFIX added, values as text) on a registered version.
    MlflowException when the version does not exist or the registry fails."""
    for key, value in tags.items():
        client().set_model_version_tag(model_name, version, f"{TAG_PREFIX}{key}", str(value))


@dataclass(frozen=True)
class Promotion:
    """A promotion decision: whether `version` holds @champion (else @challenger) and why;
    `new_score` and `champion_score` are `metric` on the holdout, scored now (NaN and None for
    an explicit `promote`; champion_score None when there was no champion)."""

    version: str
    promoted: bool
    reason: str
    new_score: float
    champion_version: str | None
    champion_score: float | None
    metric: str = PROMOTION_METRIC


def promotion_blocker(*, synthetic: bool, cv_roc_auc: float, leak_threshold: float) -> str | None:
    """Why a new version may not become champion whatever its holdout score, or None.

    `cv_roc_auc`: its mean CV ROC-AUC; above `leak_threshold` a leak is likelier than skill."""
    if synthetic:
        return "trained on synthetic data: never champion"
    if cv_roc_auc > leak_threshold:
        return (
            f"CV ROC-AUC {cv_roc_auc:.4f} is above the leak threshold {leak_threshold:.2f} "
            "(HEART_MLOPS_LEAK_THRESHOLD): a leak is likelier than skill; never champion"
        )
    return None


def promote_if_better(
    model_name: str,
    version: str,
    score_fn,
    *,
    allow: bool = True,
    blocked_reason: str = "",
    attempts: int = 3,
    metric: str = PROMOTION_METRIC,
    lower_is_better: bool = False,
    margin: float = 0.0,
) -> Promotion:
    """Move `champion` to `version` if `score_fn(model)` (its `metric` on the holdout) beats
    the champion's by more than `margin` (lower for a loss: `lower_is_better`), else
    `challenger`; a tie keeps the champion.

    Compare-and-set: the champion is re-read right before the alias moves; if another run moved
    it meanwhile, the comparison is made again against the new champion.
    """
    version = str(version)
    new_score = score_fn(load_version(model_name, version))
    for _ in range(attempts):
        current = version_of(version_by_alias(model_name, CHAMPION))
        if current == version:
            return Promotion(
                version, True, "already champion", new_score, version, new_score, metric
            )
        champion_score = score_fn(load_version(model_name, current)) if current else None
        if not allow:
            promoted, reason = False, blocked_reason
        elif champion_score is None:
            promoted, reason = True, "no champion yet"
        else:
            gain = (champion_score - new_score) if lower_is_better else (new_score - champion_score)
            promoted = gain > margin
            verb = "beats" if promoted else "does not beat"
            reason = f"{metric} {new_score:.4f} {verb} champion v{current} {champion_score:.4f}" + (
                f" by more than {margin:g}" if margin else ""
            )
        if version_of(version_by_alias(model_name, CHAMPION)) != current:
            log.warning("champion moved during comparison; comparing again")
            continue
        result = Promotion(version, promoted, reason, new_score, current, champion_score, metric)
        _record(model_name, result)
        return result
    raise RegistryError(
        f"champion kept moving during {attempts} comparisons; version {version} "
        "left without alias, try `heart-mlops promote` later"
    )


def _record(model_name: str, result: Promotion) -> None:
    set_version_tags(
        model_name,
        result.version,
        {
            "promotion_decision": "champion" if result.promoted else "challenger",
            "promotion_reason": result.reason,
            "promotion_champion_version": result.champion_version or "",
            **(
                {}  # an explicit promotion scores nothing
                if math.isnan(result.new_score)
                else {
                    f"promotion_{result.metric}": f"{result.new_score:.6f}",
                    f"promotion_champion_{result.metric}": (
                        "" if result.champion_score is None else f"{result.champion_score:.6f}"
                    ),
                }
            ),
            "promotion_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    alias = CHAMPION if result.promoted else CHALLENGER
    client().set_registered_model_alias(model_name, alias, result.version)
    log.info("version %s -> @%s (%s)", result.version, alias, result.reason)


def promote(model_name: str, version: str, reason: str) -> Promotion:
    """Explicit promotion or rollback: `champion` -> version, recorded like any other."""
    try:
        client().get_model_version(model_name, version)
    except MlflowException:
        raise RegistryError(f"model '{model_name}' has no version {version}") from None
    result = Promotion(
        str(version),
        True,
        reason,
        float("nan"),
        version_of(version_by_alias(model_name, CHAMPION)),
        None,
    )
    _record(model_name, result)
    return result


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Terminate a run that need not be active (the pipeline's parent run) with `status`
    (an MLflow RunStatus name). MlflowException when the run does not exist or the store fails."""
    client().set_terminated(run_id, status=status)


def mark_failed(run_id: str | None, message: str) -> None:
    """Leave no run looking successful after a failure."""
    if not run_id:
        return
    try:
        client().set_tag(run_id, f"{TAG_PREFIX}error", message[:5000])
        client().set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
    except Exception:  # the store may be what failed; the original error matters more
        log.warning("could not mark MLflow run %s failed", run_id)
