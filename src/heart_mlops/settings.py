"""Every setting of the system, read from the environment (or `.env`), with embedded defaults.

Project settings carry the prefix `HEART_MLOPS_`; the standard MLflow and AWS variables
(`MLFLOW_TRACKING_URI`, `AWS_ENDPOINT_URL_S3`, ...) are read under their own names.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SelectionMetric = Literal["log_loss", "brier", "roc_auc", "accuracy", "f1", "precision", "recall"]


class Settings(BaseSettings):
    """All settings: keyword arguments, else the environment (HEART_MLOPS_<NAME>, or the
    variable's own name as for MLFLOW_TRACKING_URI), else `.env` in the working directory, else
    the defaults below. pydantic's ValidationError names a value that is not allowed."""

    model_config = SettingsConfigDict(
        env_prefix="HEART_MLOPS_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Field(Path(".heart-mlops"), description="Local home: stores, logs, Airflow home.")
    data_uri: str = Field(
        str(PROJECT_ROOT / "data" / "heart.csv"),
        description="Training data: a path, file:// or s3:// URI (CSV or UCI processed.*.data).",
    )
    artifact_store_uri: str = Field(
        "", description="Where steps exchange data: file:// or s3://. Default: HOME/artifacts."
    )
    mlflow_tracking_uri: str = Field(
        "",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "HEART_MLOPS_MLFLOW_TRACKING_URI"),
        description="MLflow tracking server or store. Default: sqlite:///HOME/mlflow.db.",
    )
    experiment_name: str = "heart-disease"
    model_name: str = "heart_disease_classifier"
    model_params_path: Path = PROJECT_ROOT / "airflow" / "config" / "model_params.yaml"

    seed: int = 42
    holdout_fraction: float = Field(0.2, gt=0, lt=0.5)
    cv_folds: int = Field(5, ge=2)
    cv_repeats: int = Field(3, ge=1)
    tuning_trials: int = Field(20, ge=0)
    tuning_cv_repeats: int = Field(
        1, ge=1, description="CV repeats per tuning trial; the pick is re-scored on cv_repeats."
    )
    selection_metric: SelectionMetric = Field(
        "log_loss",
        description="Mean CV metric that selects and tunes the candidate, and holdout metric "
        "of the champion gate (log_loss and brier: lower is better). Log loss, a proper "
        "scoring rule, values honest probabilities (docs/model.md).",
    )
    promotion_margin: float = Field(
        0.0,
        ge=0,
        description="A new version becomes champion only when its holdout selection metric "
        "beats the champion's by more than this (on the same holdout); a tie keeps the "
        "champion.",
    )
    threshold_policy: Literal["fixed", "sensitivity"] = Field(
        "fixed",
        description="fixed: `threshold`; sensitivity: the highest threshold whose out-of-fold "
        "sensitivity reaches `target_sensitivity`, chosen per version.",
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="Decision threshold on P(disease).")
    target_sensitivity: float = Field(
        0.9, gt=0, le=1, description="Share of the diseased the sensitivity policy must find."
    )
    bootstrap_samples: int = Field(
        1000, ge=50, description="Resamples of patients for the report's 95 % intervals."
    )
    subgroup_age_bands: list[int] = Field(
        [50, 60], description="Age limits of the report's subgroups: [50, 60] -> <50, 50-59, >=60."
    )
    subgroup_min_n: int = Field(
        30, ge=1, description="A subgroup with fewer patients is reported as too few."
    )
    leak_threshold: float = Field(
        0.95,
        gt=0.5,
        le=1.0,
        description="A version whose CV ROC-AUC is above this is registered but never champion: "
        "on this data a leak (duplicates across folds, the label in a feature) is likelier than "
        "skill (honest figures are about 0.91).",
    )
    n_jobs: int = Field(2, description="Parallel jobs for CV and ensembles (-1 = all cores).")

    api_host: str = "127.0.0.1"
    api_port: int = 8800
    api_workers: int = Field(1, ge=1)
    api_token: SecretStr | None = Field(None, description="Bearer token for POST /model/reload.")
    api_poll_seconds: float = Field(30.0, ge=0, description="How often the API checks @champion.")
    api_max_batch: int = Field(1000, ge=1)
    api_max_body_bytes: int = Field(2_000_000, ge=1024)
    api_explain_max_rows: int = Field(
        20, ge=1, description="Rows of a batch that `explain=true` may ask to explain."
    )
    api_explain_background_rows: int = Field(
        50,
        ge=1,
        description="Training rows the model-agnostic explanation compares against.",
    )
    api_explain_permutations: int = Field(
        10,
        ge=1,
        description="Antithetic permutations of the model-agnostic explanation (its budget: "
        "27 model evaluations over the background rows each).",
    )
    api_onnx_threads: int = Field(
        1,
        ge=1,
        description="ONNX Runtime threads per API worker (intra-op). 1 suits one worker per "
        "core; more only helps large batches on a machine with idle cores.",
    )

    prediction_log_enabled: bool = Field(
        True, description="Log every answered row (patient data: docs/api.md#the-prediction-log)."
    )
    prediction_log_uri: str = Field(
        "",
        description="SQLAlchemy URL of the prediction log's database. "
        "Default: sqlite:///HOME/prediction-log.db.",
    )
    prediction_log_spool_dir: str = Field(
        "",
        description="Folder of the workers' write-ahead spools (local disk, shared by the "
        "workers of one host). Default: HOME/prediction-spool.",
    )
    prediction_log_retention_days: int = Field(
        180, ge=1, description="Days a logged prediction is kept (the monitoring DAG deletes)."
    )

    monitor_schedule: str | None = Field(
        "@hourly",
        description="Cron or preset (UTC) for model_monitoring; its period is the default "
        "window of `heart-mlops monitor`; `none`: triggered only.",
    )
    drift_share_threshold: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Share of drifted features (Evidently's per-feature tests plus the "
        "missing-value check) at or above which the window counts as drifted.",
    )
    drift_min_rows: int = Field(
        200,
        ge=1,
        description="Champion rows a window needs before its drift counts: fewer is reported "
        "as not enough rows and triggers nothing.",
    )
    live_roc_auc_floor: float = Field(
        0.75,
        gt=0.5,
        le=1,
        description="Live ROC-AUC below which a window with enough outcomes asks for a retrain.",
    )
    live_min_outcomes: int = Field(
        50,
        ge=2,
        description="Champion rows with a fed-back outcome a window needs for live metrics to "
        "trigger a retrain.",
    )
    retrain_cooldown_hours: float = Field(
        24.0,
        ge=0,
        description="After a retrain request, monitoring asks for no other within this time.",
    )

    airflow_port: int = 8080
    mlflow_port: int = 5000
    dag_schedule: str | None = Field(
        "@daily", description="Cron or preset (UTC) for mlops_pipeline; `none`: triggered only."
    )

    @field_validator("dag_schedule", "monitor_schedule", mode="before")
    @classmethod
    def _no_schedule(cls, value: str | None) -> str | None:
        return None if value is None or str(value).strip().lower() in ("", "none") else value

    def with_run_options(
        self, *, selection_metric: str | None = None, tuning_trials: int | None = None
    ) -> Settings:
        """These settings with one run's options over them: the CLI's `--metric`/`--trials`
        or the DAG run's params `selection_metric`/`tuning_trials`. None keeps the setting
        (HEART_MLOPS_SELECTION_METRIC, HEART_MLOPS_TUNING_TRIALS). The one place where these
        options are resolved; pydantic's ValidationError names an option that is not allowed.
        """
        options = {"selection_metric": selection_metric, "tuning_trials": tuning_trials}
        given = {key: value for key, value in options.items() if value is not None}
        if not given:
            return self
        return self.model_validate({**self.model_dump(), **given})

    @cached_property
    def home_dir(self) -> Path:
        """`home` as an absolute path, ~ expanded, relative to the working directory at first
        use (cached); it may not exist yet."""
        return self.home.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        """MLflow's tracking and registry URI: MLFLOW_TRACKING_URI, else the embedded SQLite
        store sqlite:///HOME/mlflow.db."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def artifact_store(self) -> str:
        """Where steps exchange data: HEART_MLOPS_ARTIFACT_STORE_URI, else HOME/artifacts as a
        file:// URI."""
        return self.artifact_store_uri or (self.home_dir / "artifacts").as_uri()

    @property
    def prediction_log_url(self) -> str:
        """The prediction log's SQLAlchemy URL: HEART_MLOPS_PREDICTION_LOG_URI, else the
        embedded SQLite database sqlite:///HOME/prediction-log.db."""
        return self.prediction_log_uri or f"sqlite:///{self.home_dir / 'prediction-log.db'}"

    @property
    def prediction_spool(self) -> Path:
        """The workers' spool folder: HEART_MLOPS_PREDICTION_LOG_SPOOL_DIR, else
        HOME/prediction-spool (it may not exist yet)."""
        configured = self.prediction_log_spool_dir
        return Path(configured).expanduser() if configured else self.home_dir / "prediction-spool"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """Artifact root of the local MLflow store (embedded mode only)."""
        return self.home_dir / "mlruns"
