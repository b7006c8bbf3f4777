"""`heart-mlops pipeline`: the real DAG run once on SQLite, then a run on invalid data."""

from __future__ import annotations

import pandas as pd
import pytest

from heart_mlops import registry, storage
from heart_mlops.settings import Settings
from tests.airflow.conftest import FAST_ENV, airflow_variables, run_cli, task_states

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(1200)]
ALL_TASKS = {
    "extract_data",
    "preprocess_data",
    "select_best_model",
    "tune_best_model",
    "register_model",
    *(
        f"{step}_{name}"
        for step in ("train", "evaluate")
        for name in ("random_forest", "logistic_regression", "svm")
    ),
}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("pipeline-home")
    settings = Settings(
        home=home, **{k.removeprefix("HEART_MLOPS_").lower(): v for k, v in FAST_ENV.items()}
    )
    done = run_cli(settings, "pipeline")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return settings, done


def test_every_task_succeeds(first_run):
    settings, _ = first_run
    runs = task_states(settings)
    assert len(runs) == 1
    (tasks,) = runs.values()
    assert set(tasks) == ALL_TASKS
    assert {state for state, _ in tasks.values()} == {"success"}


def test_variables_describe_the_registered_champion(first_run, tmp_path):
    settings, _ = first_run
    variables = airflow_variables(settings, tmp_path)
    registry.configure(settings)
    champion = registry.version_by_alias(settings.model_name, registry.CHAMPION)
    assert champion is not None
    assert variables["best_model_version"] == {
        "version": str(champion.version),
        "champion": True,
    }
    tags = champion.tags
    assert variables["best_model_type"] == tags["heart_mlops.candidate"]
    assert (
        variables["best_model_tuning_label"]
        == tags["heart_mlops.tuning_label"]
        in ("tuned", "untuned")
    )
    assert variables["best_model_tuned_accuracy"] == pytest.approx(
        float(tags["heart_mlops.holdout_accuracy"]), abs=1e-6
    )
    assert variables["best_model_cv_roc_auc"] == pytest.approx(
        float(tags["heart_mlops.cv_roc_auc_mean"]), abs=1e-6
    )
    assert isinstance(variables["best_model_tuned_params"], dict)
    assert variables["best_model_tuned_params"]


def test_runs_are_tracked_in_the_project_experiment(first_run):
    settings, _ = first_run
    experiment_id = registry.configure(settings)
    (run_key,) = task_states(settings)
    runs = registry.client().search_runs(
        [experiment_id], f"tags.`heart_mlops.pipeline_run` = '{run_key}'"
    )
    steps = sorted(r.data.tags.get("heart_mlops.step", "") for r in runs)
    assert steps == ["candidate"] * 3 + ["pipeline", "register", "tuning"]
    assert not (settings.home_dir.parent / "mlruns").exists()


def test_the_run_writes_under_its_own_prefix(first_run):
    settings, _ = first_run
    (run_key,) = task_states(settings)
    keys = storage.list_keys(storage.join(settings.artifact_store, "runs"))
    assert keys and all("/runs/manual__" in key for key in keys)
    names = {key.rsplit("/runs/", 1)[1].split("/", 1)[1] for key in keys}
    assert {
        "raw/data.csv",
        "validated.parquet",
        "train.parquet",
        "holdout.parquet",
        "reports/registration.json",
    } <= names


def test_invalid_data_fails_at_preprocess_and_keeps_the_champion(first_run, tmp_path):
    settings, _ = first_run
    registry.configure(settings)
    champion = registry.version_by_alias(settings.model_name, registry.CHAMPION).version
    versions = len(registry.client().search_model_versions(f"name = '{settings.model_name}'"))
    frame = pd.read_csv(settings.data_uri)
    frame.loc[:4, "age"] = 500
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)

    done = run_cli(settings, "pipeline", "--data", str(bad))

    assert done.returncode == 1
    assert "data validation failed" in done.stdout + done.stderr
    (tasks,) = [
        t
        for t in task_states(settings).values()
        if t["extract_data"][0] == "success" and t["preprocess_data"][0] != "success"
    ]
    assert tasks["preprocess_data"] == ("failed", 1)  # no retries
    assert {tasks[t][0] for t in ALL_TASKS - {"extract_data", "preprocess_data"}} == {
        "upstream_failed"
    }
    registry.configure(settings)
    assert registry.version_by_alias(settings.model_name, registry.CHAMPION).version == champion
    assert (
        len(registry.client().search_model_versions(f"name = '{settings.model_name}'")) == versions
    )
