"""How the served version computes P(disease): ONNX Runtime on the version's ONNX form, or its
scikit-learn pipeline when it has none that agrees.

At load, the ONNX form logged with the version (registry.onnx_files) is run on the probe rows
stored with it and compared with the outputs stored with them; the pipeline is not unpickled.
A version logged before ONNX forms existed is converted here, with the same check
(onnx_export.export). A version that does not convert, or whose ONNX form disagrees, is served
by its own predict_proba, with a log line saying why: never by a runtime that disagrees.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from heart_mlops import registry
from heart_mlops.data import disease_column
from heart_mlops.onnx_model import (
    INFO_ARTIFACT,
    ONNX_ARTIFACT,
    PROBE_ARTIFACT,
    OnnxModel,
    Probe,
    describe,
    disagreement,
)

log = logging.getLogger(__name__)
FILES = [ONNX_ARTIFACT, PROBE_ARTIFACT, INFO_ARTIFACT]


@dataclass(frozen=True)
class Runtime:
    """P(disease) (n,) for rows (n, 13) float64 of the raw features (heart.csv codes, NaN =
    missing). `kind`: "onnx" or "sklearn"; `reason`: why scikit-learn serves (None for onnx)."""

    predict_disease: Callable[[np.ndarray], np.ndarray]
    kind: str
    estimator_type: str
    parameters: dict = field(default_factory=dict)
    reason: str | None = None

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self.predict_disease(rows)


def sklearn_runtime(pipeline, reason: str | None = None) -> Runtime:
    """The pipeline's own predict_proba as a Runtime, its estimators on one job each (serving
    answers many small requests: no pool per call). Raises ValueError as disease_column does."""
    _use_one_job(pipeline[-1])
    column = disease_column(pipeline)
    info = json.loads(describe(pipeline))
    return Runtime(
        lambda rows: pipeline.predict_proba(rows)[:, column],
        "sklearn",
        info["model_type"],
        info["parameters"],
        reason,
    )


def onnx_runtime(files: dict[str, bytes], threshold: float, threads: int) -> Runtime:
    """The ONNX form in `files` (registry.version_files of FILES) as a Runtime, after its
    stored probe rows gave their stored P(disease) (onnx_model.disagreement at `threshold`).

    ValueError saying why when they do not, or the files cannot be read."""
    probe = Probe.from_bytes(files[PROBE_ARTIFACT])
    info = json.loads(files[INFO_ARTIFACT])
    model = OnnxModel(files[ONNX_ARTIFACT], probe.column, threads)
    problem = disagreement(model(probe.rows), probe.expected, threshold)
    if problem:
        raise ValueError(f"its ONNX form disagrees with its stored probe outputs: {problem}")
    return Runtime(model, model.kind, info["model_type"], info["parameters"])


def load_runtime(champion: registry.Champion, threads: int = 1) -> Runtime:
    """The runtime serving `champion`: its stored ONNX form when it agrees; else, for a version
    without one, its pipeline converted now; else its pipeline (see the module's docstring).
    Call with MLflow connected (registry.connect). `threads`: ONNX Runtime intra-op threads.

    MlflowException when the version's files cannot be read."""
    name, version = champion.model_name, champion.version
    files = registry.version_files(name, version, FILES)
    if files is not None:
        try:
            return onnx_runtime(files, champion.threshold, threads)
        except Exception as exc:  # a corrupt file or another ONNX Runtime: never serve it
            reason = str(exc)
    else:
        try:
            from heart_mlops.onnx_export import ConversionError, export

            onnx_bytes, probe = export(champion.pipeline, champion.threshold)
            files = dict(
                zip(FILES, (onnx_bytes, probe.to_bytes(), describe(champion.pipeline)), strict=True)
            )
            log.info("version %s had no ONNX form: converted at load, probe rows agree", version)
            return onnx_runtime(files, champion.threshold, threads)
        except (ImportError, ConversionError, ValueError) as exc:
            reason = f"it has no ONNX form and does not convert: {exc}"
    log.warning("version %s of '%s' served by scikit-learn: %s", version, name, reason)
    return sklearn_runtime(champion.pipeline, reason)


def _use_one_job(estimator) -> None:
    """Set n_jobs=1 on the estimator, its inner estimator and calibrated members."""
    for inner in (estimator, getattr(estimator, "estimator", None)):
        if inner is not None and "n_jobs" in inner.get_params(deep=False):
            inner.set_params(n_jobs=1)
    for calibrated in getattr(estimator, "calibrated_classifiers_", []):
        _use_one_job(calibrated.estimator)
