"""Settings: defaults, the environment (prefix, MLflow's own variable, .env), run options."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from heart_mlops.settings import PROJECT_ROOT, Settings


@pytest.fixture(autouse=True)
def _no_env_file_of_the_checkout(tmp_path, monkeypatch):
    """Settings read `.env` from the working directory: use an empty one of the test's own."""
    monkeypatch.chdir(tmp_path)


def test_defaults():
    settings = Settings()
    assert settings.home == Path(".heart-mlops")
    assert settings.data_uri == str(PROJECT_ROOT / "data" / "heart.csv")
    assert settings.model_params_path == PROJECT_ROOT / "airflow" / "config" / "model_params.yaml"
    assert (settings.seed, settings.holdout_fraction, settings.threshold) == (42, 0.2, 0.5)
    assert (settings.cv_folds, settings.cv_repeats) == (5, 3)
    assert (settings.tuning_trials, settings.tuning_cv_repeats) == (20, 1)
    assert settings.selection_metric == "log_loss"
    assert settings.experiment_name == "heart-disease"
    assert settings.model_name == "heart_disease_classifier"
    assert settings.dag_schedule == "@daily"
    assert settings.api_token is None
    assert (settings.mlflow_tracking_uri, settings.artifact_store_uri) == ("", "")


def test_project_settings_are_read_under_the_prefix(monkeypatch):
    monkeypatch.setenv("HEART_MLOPS_SEED", "7")
    monkeypatch.setenv("HEART_MLOPS_SELECTION_METRIC", "f1")
    monkeypatch.setenv("HEART_MLOPS_API_TOKEN", "s3cret")
    monkeypatch.setenv("THRESHOLD", "0.9")  # no prefix: not a setting of this project
    settings = Settings()
    assert settings.seed == 7
    assert settings.selection_metric == "f1"
    assert settings.api_token.get_secret_value() == "s3cret"
    assert settings.threshold == 0.5


def test_dot_env_of_the_working_directory_is_read(tmp_path):
    (tmp_path / ".env").write_text("HEART_MLOPS_CV_FOLDS=4\nHEART_MLOPS_MODEL_NAME=other\n")
    settings = Settings()
    assert (settings.cv_folds, settings.model_name) == (4, "other")


@pytest.mark.parametrize("variable", ["MLFLOW_TRACKING_URI", "HEART_MLOPS_MLFLOW_TRACKING_URI"])
def test_tracking_uri_comes_from_mlflows_own_variable_or_the_prefixed_one(monkeypatch, variable):
    monkeypatch.setenv(variable, "http://mlflow.example:5000")
    settings = Settings()
    assert settings.mlflow_tracking_uri == "http://mlflow.example:5000"
    assert settings.tracking_uri == "http://mlflow.example:5000"


def test_an_invalid_environment_value_names_the_setting(monkeypatch):
    monkeypatch.setenv("HEART_MLOPS_HOLDOUT_FRACTION", "0.7")
    with pytest.raises(ValidationError, match="holdout_fraction"):
        Settings()


@pytest.mark.parametrize("value", ["none", "None", " NONE ", ""])
def test_dag_schedule_none_means_triggered_only(monkeypatch, value):
    monkeypatch.setenv("HEART_MLOPS_DAG_SCHEDULE", value)
    assert Settings().dag_schedule is None


def test_dag_schedule_keeps_a_cron_or_preset():
    assert Settings(dag_schedule="@hourly").dag_schedule == "@hourly"
    assert Settings(dag_schedule="0 3 * * *").dag_schedule == "0 3 * * *"
    assert Settings(dag_schedule=None).dag_schedule is None


def test_run_options_of_none_keep_the_settings(monkeypatch):
    monkeypatch.setenv("HEART_MLOPS_SELECTION_METRIC", "recall")
    monkeypatch.setenv("HEART_MLOPS_TUNING_TRIALS", "9")
    resolved = Settings().with_run_options(selection_metric=None, tuning_trials=None)
    assert (resolved.selection_metric, resolved.tuning_trials) == ("recall", 9)


def test_run_options_replace_the_settings_and_keep_every_other_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    settings = Settings(
        home=tmp_path / "home", seed=3, api_token=SecretStr("token"), dag_schedule="none"
    )
    resolved = settings.with_run_options(selection_metric="precision", tuning_trials=0)
    assert (resolved.selection_metric, resolved.tuning_trials) == ("precision", 0)
    assert (settings.selection_metric, settings.tuning_trials) == ("log_loss", 20)
    assert isinstance(resolved.api_token, SecretStr)
    assert resolved.api_token.get_secret_value() == "token"
    assert resolved.mlflow_tracking_uri == "http://mlflow.example:5000"
    assert (resolved.seed, resolved.home, resolved.dag_schedule) == (3, tmp_path / "home", None)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"selection_metric": "mse"}, "selection_metric"),
        ({"tuning_trials": -1}, "tuning_trials"),
    ],
)
def test_invalid_run_option_raises_validation_error_naming_it(options, field):
    with pytest.raises(ValidationError, match=field):
        Settings().with_run_options(**options)


def test_derived_uris_default_under_home(tmp_path):
    settings = Settings(home=tmp_path / "home")
    home = (tmp_path / "home").resolve()
    assert settings.tracking_uri == f"sqlite:///{home}/mlflow.db"
    assert settings.tracking_uri.startswith("sqlite:////")  # an absolute path for SQLAlchemy
    assert settings.artifact_store == f"file://{home}/artifacts"
    assert settings.mlflow_artifacts_dir == home / "mlruns"


def test_derived_uris_are_the_configured_ones_when_given(tmp_path):
    settings = Settings(
        home=tmp_path,
        mlflow_tracking_uri="postgresql://db/mlflow",
        artifact_store_uri="s3://artifacts/heart",
    )
    assert settings.tracking_uri == "postgresql://db/mlflow"
    assert settings.artifact_store == "s3://artifacts/heart"


def test_home_is_expanded_and_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert Settings(home=Path("~/stores")).home_dir == (tmp_path / "user" / "stores").resolve()
    assert Settings(home=Path("relative")).home_dir == tmp_path.resolve() / "relative"
