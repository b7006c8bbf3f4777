"""A registered version's ONNX form as it is served: the InferenceSession, the probe rows stored
with it, and the check that the two still agree.

Needs numpy and onnxruntime only: the serving start path imports neither scikit-learn nor
MLflow through this module. The conversion itself is onnx_export.py.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import onnxruntime

from heart_mlops.data import FEATURE_SPECS

PARITY_TOLERANCE = 1e-6  # absolute, on P(disease)
# the version's files (MLflow artifacts of its logged model)
ONNX_ARTIFACT = "onnx_model"
PROBE_ARTIFACT = "onnx_probe"
INFO_ARTIFACT = "onnx_info"
ARTIFACT_FILES = {
    ONNX_ARTIFACT: "model.onnx",
    PROBE_ARTIFACT: "probe.npz",
    INFO_ARTIFACT: "info.json",
}


def probe_rows(count: int = 256, seed: int = 0) -> np.ndarray:
    """Rows (count, 13) over the whole allowed range of every feature (codes, or uniform in
    [low, high] to 0.1), about 10% missing (NaN) and 10% missing codes per feature."""
    rng = np.random.default_rng(seed)
    columns = []
    for spec in FEATURE_SPECS:
        if spec.codes:
            values = rng.choice(np.array(spec.codes, dtype=float), count)
        else:
            values = rng.uniform(spec.low, spec.high, count).round(1)
        values[rng.random(count) < 0.1] = np.nan
        if spec.missing_code is not None:
            values[rng.random(count) < 0.1] = spec.missing_code
        columns.append(values)
    return np.column_stack(columns)


def disagreement(served: np.ndarray, expected: np.ndarray, threshold: float) -> str | None:
    """Why `served` P(disease) may not stand for `expected` (same rows), or None when every
    value is within PARITY_TOLERANCE and every decision at `threshold` is the same."""
    if served.shape != expected.shape:
        return f"{served.shape[0]} probabilities for {expected.shape[0]} rows"
    difference = float(np.max(np.abs(served - expected), initial=0.0))
    if not difference <= PARITY_TOLERANCE:  # also catches NaN
        return f"P(disease) differs by up to {difference:.3g} (allowed {PARITY_TOLERANCE:g})"
    flipped = int(np.count_nonzero((served >= threshold) != (expected >= threshold)))
    if flipped:
        return f"{flipped} decision(s) at threshold {threshold:g} differ"
    return None


@dataclass(frozen=True)
class Probe:
    """Rows (n, 13) and the pipeline's P(disease) on them (n,), computed at registration;
    `column` is the disease column of the model's probabilities."""

    rows: np.ndarray
    expected: np.ndarray
    column: int = 1

    def to_bytes(self) -> bytes:
        """The probe as .npz bytes (`from_bytes` reads them)."""
        buffer = io.BytesIO()
        np.savez(buffer, rows=self.rows, expected=self.expected, column=np.array(self.column))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> Probe:
        """A probe from `to_bytes` output. ValueError/KeyError when it is not one."""
        with np.load(io.BytesIO(payload), allow_pickle=False) as stored:
            return cls(stored["rows"], stored["expected"], int(stored["column"]))


class OnnxModel:
    """P(disease) from rows (n, 13) float64 (heart.csv codes, NaN = missing) through ONNX
    Runtime: one InferenceSession.run per call. `threads`: the session's intra-op threads."""

    kind = "onnx"

    def __init__(self, onnx_bytes: bytes, column: int = 1, threads: int = 1) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.session = onnxruntime.InferenceSession(
            onnx_bytes, options, providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0].name
        self._output = ["probabilities"]
        self.column = column

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """rows (n, 13) -> P(disease) (n,) float64."""
        (probabilities,) = self.session.run(self._output, {self._input: rows})
        return probabilities[:, self.column].astype(np.float64, copy=False)


def describe(pipeline) -> bytes:
    """What /model/info says of a fitted pipeline's estimator, as JSON bytes: {"model_type":
    class name, "parameters": its get_params(deep=False), values not JSON-native as repr}.
    Stored with the ONNX form, so serving it needs no unpickling."""
    estimator = pipeline[-1]
    parameters = {
        key: value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
        for key, value in estimator.get_params(deep=False).items()
    }
    return json.dumps({"model_type": type(estimator).__name__, "parameters": parameters}).encode()
