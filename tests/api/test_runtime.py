"""The served runtime: ONNX Runtime gives the registered model's probabilities (within 1e-6) for
every candidate and calibration; a version without an ONNX form is converted at load; a
version that cannot be converted, or whose ONNX form disagrees, is served by scikit-learn."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from heart_mlops import onnx_model, registry
from heart_mlops.api import create_app
from heart_mlops.api.model_holder import _REGISTRY_LOCK
from heart_mlops.api.runtime import load_runtime
from heart_mlops.data import FEATURES, MISSING_CODES, load_bytes
from heart_mlops.errors import ConfigError
from heart_mlops.evaluation import xy
from heart_mlops.models import Candidate, load_candidates
from heart_mlops.onnx_export import ConversionError, export
from heart_mlops.onnx_model import OnnxModel, probe_rows
from heart_mlops.settings import Settings
from tests.api.conftest import register_champion, wait_until_ready

pytestmark = pytest.mark.timeout(300)
HEART_CSV = "data/heart.csv"
TOLERANCE = onnx_model.PARITY_TOLERANCE


@pytest.fixture(scope="module")
def heart_rows() -> pd.DataFrame:
    return pd.read_csv(HEART_CSV).loc[:, list(FEATURES)].astype(float)


@pytest.fixture(scope="module")
def training() -> tuple[pd.DataFrame, pd.Series]:
    return xy(load_bytes(Path(HEART_CSV).read_bytes()).frame)


def test_served_probabilities_equal_the_registered_champion_on_every_row(
    client, api_settings, heart_rows
):
    assert client.get("/model/info").json()["runtime"] == "onnx"
    with _REGISTRY_LOCK:
        registry.configure(api_settings)
        pyfunc = mlflow.pyfunc.load_model(f"models:/{api_settings.model_name}@champion")
    expected = np.asarray(pyfunc.predict(heart_rows))[:, 1]
    instances = [{"features": row} for row in heart_rows.to_numpy().tolist()]
    served = []
    for start in range(0, len(instances), api_settings.api_max_batch):
        response = client.post(
            "/predict/batch", json={"instances": instances[start : start + 1000]}
        )
        assert response.status_code == 200, response.text
        served += [p["probability"] for p in response.json()["predictions"]]
    assert len(served) == len(heart_rows)
    np.testing.assert_allclose(served, expected, rtol=0, atol=TOLERANCE)
    # single rows through /predict too
    for index in range(0, len(instances), 97):
        single = client.post("/predict", json=instances[index]).json()["probability"]
        assert abs(single - expected[index]) <= TOLERANCE


def _candidates() -> dict[str, Candidate]:
    """Each candidate of model_params.yaml without and with each calibration (SVC only with
    one: it has no predict_proba), and an extra-trees forest."""
    found = {}
    for name, c in load_candidates(Settings().model_params_path).items():
        for method in (None, "sigmoid", "isotonic"):
            candidate = Candidate(name, c.estimator, c.params, calibration=method)
            try:
                candidate.build(seed=0)
            except ConfigError:  # no predict_proba without a calibration (SVC)
                continue
            found[f"{name}-{method or 'uncalibrated'}"] = candidate
    found["extra_trees"] = Candidate("extra_trees", "sklearn.ensemble.ExtraTreesClassifier")
    return found


CANDIDATES = _candidates()


def _assert_parity(pipeline, rows: np.ndarray) -> None:
    onnx_bytes, probe = export(pipeline, threshold=0.5)
    served = OnnxModel(onnx_bytes, probe.column)
    expected = pipeline.predict_proba(pd.DataFrame(rows, columns=list(FEATURES)))[:, 1]
    np.testing.assert_allclose(served(rows), expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(served(rows) >= 0.5, expected >= 0.5)
    for row in rows[:20]:  # one row at a time, as /predict runs it
        assert (
            abs(served(row[None, :])[0] - pipeline.predict_proba(row[None, :])[0, 1]) <= TOLERANCE
        )


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_onnx_form_matches_predict_proba_for_each_candidate(name, training, heart_rows):
    pipeline = CANDIDATES[name].build(seed=0).fit(*training)
    _assert_parity(pipeline, np.vstack([heart_rows.to_numpy(), probe_rows(500, seed=1)]))


def test_onnx_form_matches_for_a_feature_missing_in_every_training_row(training, heart_rows):
    """Like a hospital file with no cholesterol: the imputer drops the empty feature."""
    X, y = training
    X = X.assign(chol=MISSING_CODES["chol"])
    pipeline = CANDIDATES["random_forest-sigmoid"].build(seed=0).fit(X, y)
    _assert_parity(pipeline, np.vstack([heart_rows.to_numpy(), probe_rows(300, seed=2)]))


def _unconvertible(training):
    """A pipeline with a step skl2onnx has no converter for (a FunctionTransformer of tanh)."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from heart_mlops.features import build_preprocessor

    return Pipeline(
        [
            ("preprocess", build_preprocessor()),
            ("odd", FunctionTransformer(np.tanh)),
            ("model", KNeighborsClassifier()),
        ]
    ).fit(*training)


def test_an_unconvertible_pipeline_is_refused_by_export(training):
    with pytest.raises(ConversionError):
        export(_unconvertible(training), threshold=0.5)


def _served(settings: Settings, rows: np.ndarray) -> tuple[dict, np.ndarray]:
    """(/model/info, P(disease) of /predict/batch) of an app serving `settings`' champion."""
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        info = client.get("/model/info").json()
        body = {"instances": [{"features": row} for row in rows.tolist()]}
        response = client.post("/predict/batch", json=body)
        assert response.status_code == 200, response.text
        return info, np.array([p["probability"] for p in response.json()["predictions"]])


def test_a_version_that_does_not_convert_is_served_by_sklearn(
    own_store, training, heart_rows, caplog
):
    pipeline = _unconvertible(training)
    with caplog.at_level(logging.WARNING):
        settings = register_champion(own_store, pipeline, "unconvertible", heart_rows)
    assert "not converted to ONNX" in caplog.text
    files = registry.version_files("unconvertible", "1", [onnx_model.ONNX_ARTIFACT])
    assert files is None
    rows = heart_rows.to_numpy()[:200]
    with caplog.at_level(logging.WARNING):
        info, served = _served(settings, rows)
    assert info["runtime"] == "sklearn"
    assert info["model_type"] == "KNeighborsClassifier"
    assert "served by scikit-learn" in caplog.text
    np.testing.assert_allclose(served, pipeline.predict_proba(rows)[:, 1], rtol=0, atol=1e-12)


def test_a_version_logged_without_onnx_form_is_converted_at_load(
    own_store, training, heart_rows, monkeypatch
):
    pipeline = CANDIDATES["svm-sigmoid"].build(seed=0).fit(*training)
    with monkeypatch.context() as patch:  # as versions logged before ONNX forms existed
        patch.setattr(registry, "onnx_files", lambda *args: {})
        settings = register_champion(own_store, pipeline, "before-onnx", heart_rows)
    assert registry.version_files("before-onnx", "1", [onnx_model.ONNX_ARTIFACT]) is None
    rows = heart_rows.to_numpy()[:1000]
    info, served = _served(settings, rows)
    assert info["runtime"] == "onnx"
    assert info["model_type"] == "CalibratedClassifierCV"
    np.testing.assert_allclose(served, pipeline.predict_proba(rows)[:, 1], rtol=0, atol=TOLERANCE)


def test_a_stored_onnx_form_that_disagrees_is_not_served(
    own_store, training, heart_rows, monkeypatch, caplog
):
    pipeline = CANDIDATES["logistic_regression-uncalibrated"].build(seed=0).fit(*training)
    settings = register_champion(own_store, pipeline, "disagreeing", heart_rows)
    stored = registry.version_files

    def tampered(name: str, version: str, names: list[str]) -> dict[str, bytes]:
        """The version's files with outputs that no longer match (a bad copy, another
        ONNX Runtime)."""
        files = stored(name, version, names)
        probe = onnx_model.Probe.from_bytes(files[onnx_model.PROBE_ARTIFACT])
        shifted = onnx_model.Probe(probe.rows, probe.expected + 1e-5, probe.column)
        return {**files, onnx_model.PROBE_ARTIFACT: shifted.to_bytes()}

    with _REGISTRY_LOCK:
        registry.connect(settings)
        champion = registry.load_champion(settings)
        assert load_runtime(champion).kind == "onnx"
        monkeypatch.setattr(registry, "version_files", tampered)
        with caplog.at_level(logging.WARNING):
            runtime = load_runtime(champion)
    assert runtime.kind == "sklearn"
    assert "disagrees" in runtime.reason and "served by scikit-learn" in caplog.text
    rows = heart_rows.to_numpy()
    np.testing.assert_allclose(runtime(rows), pipeline.predict_proba(rows)[:, 1], atol=1e-12)


def test_serving_a_version_with_an_onnx_form_imports_no_scikit_learn(api_settings):
    """The start path reads the ONNX form: no unpickling, scikit-learn only for a fallback."""
    import os
    import subprocess
    import sys

    code = (
        "import asyncio, sys\n"
        "from heart_mlops.api.model_holder import ModelHolder\n"
        "from heart_mlops.settings import Settings\n"
        "holder = ModelHolder(Settings())\n"
        "outcome = asyncio.run(holder.refresh())\n"
        "assert holder.current is not None, outcome\n"
        "print(holder.current.runtime.kind, 'sklearn' in sys.modules)\n"
    )
    env = {**os.environ, "HEART_MLOPS_HOME": str(api_settings.home_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["onnx", "False"]
