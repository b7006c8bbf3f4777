"""The pipeline end to end on a local store: registry, champion rule, harmless failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from heart_mlops import registry
from heart_mlops.data import FEATURES
from heart_mlops.errors import DataError
from heart_mlops.pipeline import run_pipeline
from heart_mlops.report import SECTIONS
from heart_mlops.settings import PROJECT_ROOT
from tests.bad_inputs import NO_LABEL, NO_ROWS, NOT_NUMBERS, WRONG_SHAPE, assert_message, case_ids
from tests.support import untrainable_files

HEART_CSV = PROJECT_ROOT / "data" / "heart.csv"


def _champion(settings):
    registry.configure(settings)
    return registry.version_by_alias(settings.model_name, registry.CHAMPION)


def _versions(settings):
    registry.configure(settings)
    return registry.client().search_model_versions(f"name = '{settings.model_name}'")


def test_champion_is_honest_and_leak_free(trained):
    registered = trained["result"].registered
    cv_auc = registered.cv["cv_roc_auc_mean"]
    assert 0.88 <= cv_auc <= 0.95, cv_auc  # above 0.95 would mean a leak
    assert registered.champion and registered.decision == "no champion yet"
    assert registered.label in {"tuned", "untuned"}
    evaluated = {e.name for e in trained["result"].evaluations}
    assert evaluated == {"random_forest", "logistic_regression", "svm"}


def test_version_carries_tags_report_and_plots(trained):
    settings = trained["settings"]
    champion = _champion(settings)
    tags = champion.tags
    assert tags["heart_mlops.data_sha256"] == (
        "ea77cdebac756ab984173c29107ccf4848577fffb77b5848a65e0426d473589b"
    )
    assert tags["heart_mlops.data_rows_distinct"] == "302"
    assert tags["heart_mlops.threshold"] == "0.5"
    assert tags["heart_mlops.promotion_decision"] == "champion"
    assert tags["heart_mlops.threshold_policy"] == "fixed"
    assert 0 < float(tags["heart_mlops.threshold_sensitivity"]) <= 1
    assert 0.5 < float(tags["heart_mlops.cv_calibration_slope"]) < 2
    artifacts = {a.path for a in registry.client().list_artifacts(champion.run_id)}
    assert {"model_report.html", "model_report.json", "data_fingerprint.json", "plots"} <= artifacts
    plots = {a.path for a in registry.client().list_artifacts(champion.run_id, "plots")}
    assert {
        "plots/roc_curve.png",
        "plots/confusion_matrix.png",
        "plots/calibration_curve.png",
    } <= plots
    page = mlflow.artifacts.load_text(f"runs:/{champion.run_id}/model_report.html")
    assert all(f"<h2>{section}</h2>" in page for section in SECTIONS)
    assert f"{settings.model_name} version {champion.version}" in page
    document = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/model_report.json")
    assert document["evidence"]["threshold"] == {
        "policy": "fixed",
        "value": 0.5,
        "target_sensitivity": 0.9,
    }
    assert set(document["evidence"]["subgroups"]) == {
        "male",
        "female",
        "age < 50",
        "age 50-59",
        "age >= 60",
    }


def test_champion_loads_in_a_fresh_process_and_gives_p_disease_with_nan(trained):
    settings = trained["settings"]
    script = f"""
import json, sys, numpy as np, pandas as pd, mlflow
mlflow.set_tracking_uri({settings.tracking_uri!r})
model = mlflow.pyfunc.load_model("models:/{settings.model_name}@champion")
integers = pd.read_csv({str(HEART_CSV)!r}).drop(columns="target")  # int64 columns
frame = integers.astype("float64")
gap = np.abs(np.asarray(model.predict(integers)) - np.asarray(model.predict(frame))).max()
frame.loc[0, :] = np.nan  # a patient with nothing recorded
for i, column in enumerate(frame.columns):
    frame.loc[i + 1, column] = np.nan  # each column missing once
out = np.asarray(model.predict(frame))
print(json.dumps({{"shape": list(out.shape), "p": out[:, 1].tolist(), "int_gap": float(gap),
                  "rowsum": float(np.abs(out.sum(axis=1) - 1).max())}}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1025, 2] and result["rowsum"] < 1e-9
    assert result["int_gap"] == 0.0  # integers answered as their floats
    p = np.array(result["p"])
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    # P(disease) agrees with the diagnosis: high for sick patients, low for healthy ones
    import pandas as pd

    disease = 1 - pd.read_csv(HEART_CSV)["target"].to_numpy()
    assert p[disease == 1].mean() > 0.6 > 0.4 > p[disease == 0].mean()


def test_disguised_missing_codes_equal_missing_values(trained):
    model = registry.load_version(
        trained["settings"].model_name, registry.version_of(_champion(trained["settings"]))
    )
    row = np.array([[63, 1, 3, 145, 0, 1, 0, 150, 0, 2.3, 0, 4, 0]], dtype=float)
    with_nan = row.copy()
    with_nan[0, [FEATURES.index("chol"), FEATURES.index("ca"), FEATURES.index("thal")]] = np.nan
    assert model.predict_proba(row)[0, 1] == model.predict_proba(with_nan)[0, 1]


def test_second_run_on_same_data_registers_a_challenger(trained):
    settings = trained["settings"]
    before = registry.version_of(_champion(settings))
    result = run_pipeline(settings, run_key="test-second-run")  # same settings
    registered = result.registered
    assert not registered.champion, registered.decision
    assert "does not beat" in registered.decision
    assert registry.version_of(_champion(settings)) == before
    challenger = registry.version_by_alias(settings.model_name, registry.CHALLENGER)
    assert registry.version_of(challenger) == registered.version
    tags = challenger.tags
    assert tags["heart_mlops.promotion_decision"] == "challenger"
    # the gate follows the selection rule: holdout log loss, lower is better, a tie keeps
    assert float(tags["heart_mlops.promotion_holdout_log_loss"]) >= float(
        tags["heart_mlops.promotion_champion_holdout_log_loss"]
    )


def test_synthetic_model_is_registered_but_never_champion(trained):
    settings = trained["settings"]
    before = registry.version_of(_champion(settings))
    result = run_pipeline(
        settings.with_run_options(tuning_trials=0), synthetic=True, run_key="test-synthetic"
    )
    registered = result.registered
    assert registered.synthetic and not registered.champion
    assert "synthetic" in registered.decision
    version = registry.client().get_model_version(settings.model_name, registered.version)
    assert version.tags["heart_mlops.synthetic"] == "true"
    assert registry.version_of(_champion(settings)) == before


def test_a_version_above_the_leak_threshold_is_registered_but_never_champion(fresh_settings):
    # an empty registry: without the guard this version would become champion
    settings = fresh_settings.model_copy(update={"leak_threshold": 0.6, "tuning_trials": 0})
    registered = run_pipeline(settings, run_key="test-leak").registered
    assert registered.cv["cv_roc_auc_mean"] > 0.6
    assert not registered.champion
    assert "above the leak threshold 0.60" in registered.decision
    assert "HEART_MLOPS_LEAK_THRESHOLD" in registered.decision
    tags = registry.client().get_model_version(settings.model_name, registered.version).tags
    assert tags["heart_mlops.promotion_decision"] == "challenger"
    assert "leak threshold" in tags["heart_mlops.promotion_reason"]
    assert _champion(settings) is None


def test_duplicates_disguised_by_an_index_column_are_removed_before_training(
    fresh_settings, tmp_path
):
    saved_back = tmp_path / "heart-with-index.csv"
    pd.read_csv(PROJECT_ROOT / "data" / "heart.csv").to_csv(saved_back)  # pandas' default
    settings = fresh_settings.model_copy(update={"tuning_trials": 0})
    result = run_pipeline(settings, data_uri=str(saved_back), run_key="test-index-column")
    fingerprint = result.data.fingerprint
    assert fingerprint["ignored_columns"] == ["Unnamed: 0"]
    assert (
        fingerprint["duplicates_removed"] == 723
        and result.data.rows_train + result.data.rows_holdout == 302
    )
    cv_auc = result.registered.cv["cv_roc_auc_mean"]
    assert 0.8 < cv_auc < settings.leak_threshold
    assert result.registered.champion


BAD_DATA = [
    ("missing columns", b"age,sex\n1,2\n", ["missing column(s) cp"]),
    (
        "an unknown cp code",
        HEART_CSV.read_bytes().replace(b"\n52,1,0,", b"\n52,1,9,", 1),
        ["column 'cp'", "rows 1 hold 9"],
    ),
    *NOT_NUMBERS,
    *NO_ROWS,
    *WRONG_SHAPE,
    *NO_LABEL,
]


@pytest.mark.parametrize("name, payload, expected", BAD_DATA, ids=case_ids(BAD_DATA))
def test_bad_data_registers_nothing_and_leaves_no_successful_run(
    trained, tmp_path, name, payload, expected
):
    settings = trained["settings"]
    champion = registry.version_of(_champion(settings))
    versions = len(_versions(settings))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(payload)
    with pytest.raises(DataError) as error:
        run_pipeline(settings, data_uri=str(bad), run_key=f"test-bad-{tmp_path.name}")
    assert_message(str(error.value), expected)
    assert registry.version_of(_champion(settings)) == champion
    assert len(_versions(settings)) == versions
    runs = mlflow.search_runs(
        experiment_names=[settings.experiment_name],
        filter_string=f"tags.`heart_mlops.pipeline_run` = 'test-bad-{tmp_path.name}'",
        output_format="list",
    )
    assert runs and all(run.info.status == "FAILED" for run in runs)


def test_missing_path_is_an_error_not_synthetic_data(fresh_settings, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        run_pipeline(fresh_settings, data_uri=str(tmp_path / "absent.csv"))
    registry.configure(fresh_settings)
    assert registry.version_by_alias(fresh_settings.model_name, registry.CHAMPION) is None


def test_rerun_of_register_model_registers_no_second_version(trained):
    """A cleared and retried register_model of the same pipeline run is idempotent."""
    from heart_mlops.pipeline import register_model

    settings, result = trained["settings"], trained["result"]
    versions = len(_versions(settings))
    again = register_model(settings, result.tuned, result.data)
    assert again.version == result.registered.version
    assert len(_versions(settings)) == versions


def test_mlflow_server_down_names_the_endpoint(tmp_path, monkeypatch):
    from heart_mlops.errors import RegistryError
    from tests.conftest import fast_settings
    from tests.support import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    endpoint = f"http://127.0.0.1:{free_port()}"
    settings = fast_settings(tmp_path, mlflow_tracking_uri=endpoint)
    with pytest.raises(RegistryError, match=endpoint):
        run_pipeline(settings, run_key="test-mlflow-down")


@pytest.mark.parametrize("repeats", [1, 2])
def test_each_tuning_trial_is_scored_on_tuning_cv_repeats(trained, repeats):
    from heart_mlops import storage, tuning
    from heart_mlops.evaluation import cv_score
    from heart_mlops.models import load_candidates

    settings = trained["settings"].model_copy(update={"tuning_cv_repeats": repeats})
    candidate = load_candidates(settings.model_params_path)["logistic_regression"]
    train = storage.read_frame(trained["result"].data.train_uri)
    registry.configure(settings)
    with mlflow.start_run(run_name="test tuning repeats"):
        params, best = tuning.search(candidate, train, settings, trials=1, metric="roc_auc")
    model = candidate.build(params, seed=settings.seed)
    expected = {
        r: cv_score(
            model,
            train,
            "roc_auc",
            folds=settings.cv_folds,
            repeats=r,
            seed=settings.seed,
            n_jobs=1,
        )
        for r in (1, 2)
    }
    assert expected[1] != expected[2]  # the two settings are told apart
    assert best == pytest.approx(expected[repeats], abs=1e-12)


def test_untrainable_data_stops_at_preprocess_writing_nothing(fresh_settings, tmp_path):
    from heart_mlops import storage
    from heart_mlops.pipeline import extract_data, preprocess_data

    messages = {"no_chol.data": "'chol' hold no value", "three_sick.csv": "disease 3"}
    for name, path in untrainable_files(tmp_path).items():
        extracted = extract_data(fresh_settings, run_key=f"test-{name}", data_uri=path)
        with pytest.raises(DataError, match=messages[name]):
            preprocess_data(fresh_settings, extracted)
        run_dir = Path(storage.join(extracted.prefix).removeprefix("file://"))
        assert sorted(p.name for p in run_dir.rglob("*") if p.is_file()) == ["data.csv"]
        run = mlflow.get_run(extracted.parent_run_id)
        assert run.info.status == "FAILED"
    assert _versions(fresh_settings) == []
