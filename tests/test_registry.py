"""The registry on a local SQLite store: the promotion rule, version tags, the champion, runs.

One store for the module, with a few logged models; each test registers versions under a
registered model of its own, so aliases never leak between tests. The promotion tests score a
model by its C (`by_c`), which sets who beats whom.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import uuid
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from mlflow.exceptions import MlflowException
from sklearn.pipeline import Pipeline

from heart_mlops import __version__, registry
from heart_mlops.data import FEATURES
from heart_mlops.errors import RegistryError
from heart_mlops.evaluation import holdout_metrics
from heart_mlops.models import base_estimator
from heart_mlops.settings import Settings
from tests.conftest import fast_settings
from tests.support import HEART_CSV, fitted_candidate, heart_split

C_VALUES = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Store:
    settings: Settings
    experiment_id: str
    run_id: str  # the run that logged the models
    uris: dict[str, str]  # logged model URI by label: "C=0.5", "C=1", "C=2", "shuffled"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    settings = fast_settings(tmp_path_factory.mktemp("registry-home"))
    experiment_id = registry.configure(settings)
    train, holdout = heart_split()
    models = {
        f"C={c:g}": fitted_candidate("logistic_regression", train, {"C": c}) for c in C_VALUES
    }
    shuffled = np.random.default_rng(0).permutation(train["disease"].to_numpy(dtype=int))
    models["shuffled"] = fitted_candidate("logistic_regression", train, labels=shuffled)
    with mlflow.start_run(run_name="models of the registry tests") as run:
        uris = {
            label: registry.log_model(model, holdout, name=f"model_{i}")
            for i, (label, model) in enumerate(models.items())
        }
    return Store(settings, experiment_id, run.info.run_id, uris)


class Versions:
    """A registered model of one test's own in the module's store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.name = f"heart-{uuid.uuid4().hex[:8]}"
        self.settings = store.settings.model_copy(update={"model_name": self.name})

    def add(self, label: str, tags: dict | None = None, description: str | None = None) -> str:
        return registry.register(self.store.uris[label], self.name, tags or {}, description)

    def alias(self, alias: str) -> str | None:
        return registry.version_of(registry.version_by_alias(self.name, alias))

    def aliases(self, version: str) -> list[str]:
        return sorted(registry.client().get_model_version(self.name, version).aliases)

    def tags(self, version: str) -> dict[str, str]:
        return registry.untagged(registry.client().get_model_version(self.name, version).tags)

    def champion(self, label: str) -> str:
        """A new version of `label`, made champion by the promotion rule."""
        version = self.add(label)
        assert registry.promote_if_better(self.name, version, by_c).promoted
        return version


@pytest.fixture
def connected(store) -> Store:
    """The module's store, with MLflow pointed at it (other tests point it elsewhere)."""
    registry.configure(store.settings)
    return store


@pytest.fixture
def versions(connected) -> Versions:
    return Versions(connected)


def by_c(model) -> float:
    return base_estimator(model).C


# --- promote_if_better ----------------------------------------------------------------------
def test_first_version_is_promoted_when_there_is_no_champion(versions):
    version = versions.add("C=1")
    result = registry.promote_if_better(versions.name, version, by_c)
    assert result == registry.Promotion(version, True, "no champion yet", 1.0, None, None)
    assert versions.alias(registry.CHAMPION) == version
    tags = versions.tags(version)
    assert tags["promotion_decision"] == "champion"
    assert tags["promotion_reason"] == "no champion yet"
    assert tags["promotion_holdout_roc_auc"] == "1.000000"
    assert tags["promotion_champion_version"] == ""
    assert tags["promotion_champion_holdout_roc_auc"] == ""


def test_better_version_becomes_champion_and_the_old_one_is_left_as_it_was(versions):
    old = versions.champion("C=1")
    old_tags = versions.tags(old)
    new = versions.add("C=2")
    result = registry.promote_if_better(versions.name, new, by_c)
    assert result.promoted and (result.champion_version, result.champion_score) == (old, 1.0)
    assert result.reason == f"holdout_roc_auc 2.0000 beats champion v{old} 1.0000"
    assert versions.alias(registry.CHAMPION) == new
    assert versions.tags(new)["promotion_decision"] == "champion"
    assert versions.tags(new)["promotion_champion_version"] == old
    assert versions.tags(new)["promotion_champion_holdout_roc_auc"] == "1.000000"
    assert versions.tags(old) == old_tags
    assert versions.aliases(old) == []


@pytest.mark.parametrize("label", ["C=0.5", "C=1"], ids=["worse", "equal"])
def test_version_not_better_becomes_challenger_and_champion_stays(versions, label):
    champion = versions.champion("C=1")
    new = versions.add(label)
    result = registry.promote_if_better(versions.name, new, by_c)
    score = float(label.removeprefix("C="))
    assert not result.promoted
    assert result.reason == f"holdout_roc_auc {score:.4f} does not beat champion v{champion} 1.0000"
    assert versions.alias(registry.CHAMPION) == champion
    assert versions.alias(registry.CHALLENGER) == new
    tags = versions.tags(new)
    assert tags["promotion_decision"] == "challenger"
    assert tags["promotion_champion_version"] == champion
    assert float(tags["promotion_holdout_roc_auc"]) == score


def test_worse_challenger_does_not_move_champion(versions):
    """The rule on real scores: holdout ROC-AUC of a model and of one fit to shuffled labels."""
    holdout = heart_split()[1]

    def score(model):
        return holdout_metrics(model, holdout, 0.5)["holdout_roc_auc"]

    champion = versions.add("C=1")
    assert registry.promote_if_better(versions.name, champion, score).promoted
    version = versions.add("shuffled")  # a worse model: trained on shuffled labels
    result = registry.promote_if_better(versions.name, version, score)
    assert not result.promoted and result.champion_version == champion
    assert result.new_score < result.champion_score
    assert versions.alias(registry.CHAMPION) == champion


@pytest.mark.parametrize("has_champion", [False, True])
def test_promotion_not_allowed_is_never_champion_and_records_the_reason(versions, has_champion):
    champion = versions.champion("C=0.5") if has_champion else None
    new = versions.add("C=2")
    result = registry.promote_if_better(
        versions.name,
        new,
        by_c,
        allow=False,
        blocked_reason="trained on synthetic data: never champion",
    )
    assert not result.promoted
    assert result.reason == "trained on synthetic data: never champion"
    assert versions.alias(registry.CHAMPION) == champion
    assert versions.alias(registry.CHALLENGER) == new
    assert versions.tags(new)["promotion_reason"] == "trained on synthetic data: never champion"


def test_version_already_champion_stays_champion(versions):
    champion = versions.champion("C=1")
    result = registry.promote_if_better(versions.name, champion, by_c)
    assert (result.promoted, result.reason, result.champion_version) == (
        True,
        "already champion",
        champion,
    )
    assert versions.alias(registry.CHAMPION) == champion


def test_champion_moved_during_the_comparison_is_compared_again(versions):
    """Another run makes its version champion while this one scores the old champion."""
    old = versions.champion("C=0.5")
    elsewhere = versions.add("C=2")
    new = versions.add("C=1")
    moved = []

    def score_while_another_run_promotes(model):
        if base_estimator(model).C == 0.5 and not moved:
            registry.client().set_registered_model_alias(
                versions.name, registry.CHAMPION, elsewhere
            )
            moved.append(elsewhere)
        return by_c(model)

    result = registry.promote_if_better(versions.name, new, score_while_another_run_promotes)
    assert moved == [elsewhere]
    # against the old champion (0.5) the new version (1) would have won
    assert not result.promoted
    assert (result.champion_version, result.champion_score) == (elsewhere, 2.0)
    assert versions.alias(registry.CHAMPION) == elsewhere
    assert versions.alias(registry.CHALLENGER) == new
    assert versions.tags(old)["promotion_decision"] == "champion"


def test_champion_moving_at_every_comparison_raises_and_leaves_the_version_alone(versions):
    first = versions.champion("C=0.5")
    second = versions.add("C=0.5")
    new = versions.add("C=2")

    def score_while_champion_flips(model):
        current = versions.alias(registry.CHAMPION)
        flipped = second if current == first else first
        registry.client().set_registered_model_alias(versions.name, registry.CHAMPION, flipped)
        return by_c(model)

    with pytest.raises(RegistryError, match=f"kept moving during 3 comparisons; version {new} "):
        registry.promote_if_better(versions.name, new, score_while_champion_flips, attempts=3)
    assert versions.aliases(new) == []
    assert "promotion_decision" not in versions.tags(new)


# --- promote --------------------------------------------------------------------------------
def test_promote_rolls_the_champion_back_and_records_it(versions):
    old = versions.champion("C=1")
    new = versions.champion("C=2")
    new_tags = versions.tags(new)
    result = registry.promote(versions.name, old, "rollback drill")
    assert (result.version, result.promoted, result.reason) == (old, True, "rollback drill")
    assert (result.champion_version, result.champion_score) == (new, None)
    assert math.isnan(result.new_score)
    assert versions.alias(registry.CHAMPION) == old
    tags = versions.tags(old)
    assert tags["promotion_decision"] == "champion"
    assert tags["promotion_reason"] == "rollback drill"
    assert tags["promotion_champion_version"] == new
    assert versions.tags(new) == new_tags


def test_promote_of_an_unknown_version_names_it_and_moves_nothing(versions):
    champion = versions.champion("C=1")
    with pytest.raises(RegistryError, match=f"model '{versions.name}' has no version 99"):
        registry.promote(versions.name, "99", "typo")
    assert versions.alias(registry.CHAMPION) == champion


# --- version tags, register, load_champion --------------------------------------------------
FINGERPRINT = {
    "sha256": "ea77cd" * 10,
    "format": "csv",
    "rows_raw": 1025,
    "rows_distinct": 302,
    "duplicates_removed": 723,
}
SCORES = {
    "cv_roc_auc_mean": 0.9123456,
    "cv_roc_auc_std": 0.0211,
    "holdout_roc_auc": 0.875,
    "holdout_accuracy": 0.8196721,
}


def tags_of_a_pipeline_version(run_id: str, pipeline_run: str = "manual__1") -> dict[str, str]:
    return registry.version_tags(
        pipeline_run=pipeline_run,
        run_id=run_id,
        candidate="logistic_regression",
        tuning_label="tuned",
        threshold=0.35,
        synthetic=False,
        fingerprint=FINGERPRINT,
        scores=SCORES,
    )


def test_version_tags_are_text_with_scores_to_six_places():
    tags = tags_of_a_pipeline_version("r1")
    assert all(isinstance(value, str) for value in tags.values())
    assert tags["threshold"] == "0.35" and tags["synthetic"] == "false"
    assert tags["data_sha256"] == FINGERPRINT["sha256"]
    assert (tags["data_rows_raw"], tags["data_rows_distinct"]) == ("1025", "302")
    assert tags["cv_roc_auc_mean"] == "0.912346"
    assert tags["holdout_accuracy"] == "0.819672"
    assert tags["code_version"] == __version__


def test_load_champion_reads_back_the_tags_register_wrote(versions, store):
    version = versions.add(
        "C=2", tags_of_a_pipeline_version(store.run_id), description="tuned logistic_regression"
    )
    registry.promote(versions.name, version, "test")
    champion = registry.load_champion(versions.settings)
    assert (champion.model_name, champion.version) == (versions.name, version)
    assert champion.run_id == store.run_id
    assert champion.threshold == 0.35
    assert champion.metrics == {
        "cv": {"cv_roc_auc_mean": 0.912346, "cv_roc_auc_std": 0.0211},
        "holdout": {"holdout_roc_auc": 0.875, "holdout_accuracy": 0.819672},
    }
    assert champion.data == {
        "sha256": FINGERPRINT["sha256"],
        "rows_raw": "1025",
        "rows_distinct": "302",
    }
    assert (champion.tags["candidate"], champion.tags["tuning_label"]) == (
        "logistic_regression",
        "tuned",
    )
    assert base_estimator(champion.pipeline).C == 2.0
    found = registry.client().get_model_version(versions.name, version)
    assert found.description == "tuned logistic_regression"


def test_load_champion_of_a_given_version_needs_no_alias(versions):
    version = versions.add("C=1", tags_of_a_pipeline_version("logged-elsewhere"))
    champion = registry.load_champion(versions.settings, version)
    assert champion.version == version and champion.run_id == "logged-elsewhere"


def test_version_without_tags_falls_back_to_the_settings_threshold_and_its_own_run(versions, store):
    version = versions.add("C=1")
    champion = registry.load_champion(
        versions.settings.model_copy(update={"threshold": 0.6}), version
    )
    assert champion.threshold == 0.6
    assert champion.run_id == store.run_id
    assert champion.metrics == {"cv": {}, "holdout": {}}


def test_load_champion_without_a_champion_raises(versions):
    message = f"no version of '{versions.name}' has the alias @champion"
    with pytest.raises(RegistryError, match=message):
        registry.load_champion(versions.settings)  # no such registered model yet
    versions.add("C=1")  # registered, never promoted
    with pytest.raises(RegistryError, match=message):
        registry.load_champion(versions.settings)


def test_version_for_pipeline_run_finds_the_version_that_run_registered(versions, store):
    version = versions.add("C=1", tags_of_a_pipeline_version(store.run_id, "scheduled__7"))
    assert (
        registry.version_of(registry.version_for_pipeline_run(versions.name, "scheduled__7"))
        == version
    )
    assert registry.version_for_pipeline_run(versions.name, "scheduled__8") is None


# --- tags -----------------------------------------------------------------------------------
def test_tag_names_and_untagged_round_trip():
    tags = {"threshold": 0.5, "rows": 302, "candidate": "svm"}
    named = registry.tag_names(tags)
    assert named == {
        "heart_mlops.threshold": "0.5",
        "heart_mlops.rows": "302",
        "heart_mlops.candidate": "svm",
    }
    assert registry.untagged(named) == {"threshold": "0.5", "rows": "302", "candidate": "svm"}


def test_untagged_drops_tags_of_others():
    stored = {
        "heart_mlops.step": "pipeline",
        "mlflow.runName": "x",
        "step": "other",
        "heart_mlops_step": "near miss",
    }
    assert registry.untagged(stored) == {"step": "pipeline"}


# --- runs -----------------------------------------------------------------------------------
def test_pipeline_run_is_reused_for_the_same_run_key(connected):
    key, other_key = f"manual__{uuid.uuid4().hex}", f"manual__{uuid.uuid4().hex}"
    first = registry.pipeline_run(connected.experiment_id, key, "data/heart.csv", False)
    run = registry.client().get_run(first)
    assert registry.untagged(run.data.tags) == {
        "pipeline_run": key,
        "step": "pipeline",
        "source": "data/heart.csv",
        "synthetic": "false",
        "code_version": __version__,
    }
    registry.end_run(first)
    # a step's run of the same pipeline run carries the same key and is not the pipeline's
    with registry.step_run(
        "svm", parent_run_id=first, pipeline_run=key, synthetic=False, tags={"step": "candidate"}
    ):
        pass
    again = registry.pipeline_run(connected.experiment_id, key, "elsewhere", True)
    assert again == first
    rerun = registry.client().get_run(first)
    assert rerun.info.status == "RUNNING"
    assert rerun.data.tags["heart_mlops.source"] == "data/heart.csv"
    assert (
        registry.pipeline_run(connected.experiment_id, other_key, "data/heart.csv", True) != first
    )


def test_pipeline_run_says_why_it_runs(connected):
    trigger = {
        "triggered_by": "asset_triggered",
        "trigger_reason": "data drift: drift share 0.46 >= 0.3 (age, cp)",
        "trigger_report_uri": "s3://data/monitoring/w/drift-report-v1.html",
    }
    key = f"asset_triggered__{uuid.uuid4().hex}"
    run_id = registry.pipeline_run(connected.experiment_id, key, "data/heart.csv", False, trigger)
    tags = registry.untagged(registry.client().get_run(run_id).data.tags)
    assert {name: tags[name] for name in trigger} == trigger
    assert tags["pipeline_run"] == key


def test_mark_failed_fails_the_run_and_keeps_the_message(connected):
    run_id = registry.pipeline_run(
        connected.experiment_id, f"failing__{uuid.uuid4().hex}", "s", False
    )
    registry.mark_failed(run_id, "DataError: " + "x" * 6000)
    run = registry.client().get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["heart_mlops.error"] == ("DataError: " + "x" * 6000)[:5000]


def test_mark_failed_without_a_run_does_nothing(connected, caplog):
    with caplog.at_level(logging.WARNING, logger="heart_mlops.registry"):
        registry.mark_failed(None, "no run yet")
        registry.mark_failed("", "no run yet")
    assert caplog.text == ""


def test_mark_failed_of_an_unreachable_run_only_warns(connected, caplog):
    with caplog.at_level(logging.WARNING, logger="heart_mlops.registry"):
        registry.mark_failed("0" * 32, "boom")  # no such run in the store
    assert f"could not mark MLflow run {'0' * 32} failed" in caplog.text


@pytest.mark.parametrize(
    "synthetic, cv_roc_auc, expected",
    [
        (False, 0.91, None),
        (False, 0.95, None),  # at the threshold: allowed
        (False, 0.984, "CV ROC-AUC 0.9840 is above the leak threshold 0.95"),
        (True, 0.91, "trained on synthetic data"),
    ],
)
def test_promotion_blocker_names_why_a_version_may_not_become_champion(
    synthetic, cv_roc_auc, expected
):
    reason = registry.promotion_blocker(
        synthetic=synthetic, cv_roc_auc=cv_roc_auc, leak_threshold=0.95
    )
    assert reason == expected if expected is None else expected in reason


# --- the registered model as MLflow loads and serves it --------------------------------------
@pytest.fixture(scope="module")
def champion_pyfunc(store):
    """A champion of the module's store (C=1) under a name of its own, loaded the way the README
    shows. -> (settings of that name, the loaded pyfunc model)"""
    registry.configure(store.settings)
    settings = store.settings.model_copy(update={"model_name": f"heart-{uuid.uuid4().hex[:8]}"})
    version = registry.register(store.uris["C=1"], settings.model_name, {})
    registry.promote(settings.model_name, version, "pyfunc tests")
    return settings, mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion")


def test_registered_model_takes_the_integers_of_heart_csv_like_their_floats(champion_pyfunc):
    settings, model = champion_pyfunc
    integers = pd.read_csv(HEART_CSV)  # int64 columns (oldpeak float64), and `target`
    assert (integers.dtypes == "int64").sum() == 13
    out = np.asarray(model.predict(integers))
    assert out.shape == (1025, 2)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    floats = integers.loc[:, list(FEATURES)].astype("float64")
    np.testing.assert_array_equal(out, np.asarray(model.predict(floats)))
    # the same answer as the sklearn pipeline the API compiles
    pipeline = registry.load_champion(settings).pipeline
    assert isinstance(pipeline, Pipeline)
    np.testing.assert_array_equal(out, pipeline.predict_proba(floats))


def test_registered_model_takes_nan_and_the_missing_codes_as_missing(champion_pyfunc):
    _, model = champion_pyfunc
    rows = pd.read_csv(HEART_CSV).loc[:3, list(FEATURES)].astype("float64")
    rows.loc[0, :] = np.nan  # nothing recorded
    rows.loc[1, ["ca", "thal", "chol", "trestbps"]] = [4, 0, 0, 0]  # heart.csv's missing codes
    rows.loc[2, :] = rows.loc[1, :]
    rows.loc[2, ["ca", "thal", "chol", "trestbps"]] = np.nan
    out = np.asarray(model.predict(rows))
    assert out.shape == (4, 2) and np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out[1], out[2])


@pytest.mark.parametrize(
    "changes, expected",
    [
        # the UCI codes of chest pain and thallium, which heart.csv codes otherwise
        (
            {(0, "cp"): 4, (1, "thal"): 7},
            [
                "column 'cp': rows 1 hold 4; allowed: 0, 1, 2, 3",
                "column 'thal': rows 2 hold 7; allowed: 1, 2, 3 (0 = missing)",
            ],
        ),
        (
            {(2, "age"): 500, (2, "thal"): 99},
            [
                "column 'age': rows 3 hold 500; allowed: 1 to 120",
                "column 'thal': rows 3 hold 99; allowed: 1, 2, 3 (0 = missing)",
            ],
        ),
        (
            {(1, "oldpeak"): -7.5, (3, "chol"): np.inf},
            [
                "column 'oldpeak': rows 2 hold -7.5; allowed: -5 to 10",
                "column 'chol': rows 4 hold inf; allowed: 60 to 700 (0 = missing)",
            ],
        ),
        ({(3, "ca"): 2.5}, ["column 'ca': rows 4 hold 2.5; allowed: 0, 1, 2, 3 (4 = missing)"]),
        ({(1, "sex"): True}, ["column 'sex' must be numeric; rows 2 hold True"]),
        ({(0, "trestbps"): "145"}, ["column 'trestbps' must be numeric; rows 1 hold '145'"]),
    ],
    ids=["uci-codes", "garbage", "out-of-range", "not-a-code", "boolean", "text"],
)
def test_registered_model_refuses_values_outside_the_feature_table(
    champion_pyfunc, changes, expected
):
    _, model = champion_pyfunc
    rows = pd.read_csv(HEART_CSV).loc[:3, list(FEATURES)]
    for (row, column), value in changes.items():
        if isinstance(value, bool | str):
            rows[column] = rows[column].astype(object)
        elif isinstance(value, float):
            rows[column] = rows[column].astype("float64")
        rows.loc[row, column] = value
    with pytest.raises(MlflowException) as raised:
        model.predict(rows)
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
    for line in expected:
        assert line in raised.value.message


def test_registered_model_names_a_missing_column(champion_pyfunc):
    _, model = champion_pyfunc
    with pytest.raises(MlflowException, match="'thal'"):
        model.predict(pd.read_csv(HEART_CSV).drop(columns="thal"))


def test_registered_model_loads_in_a_fresh_process_as_the_readme_shows(champion_pyfunc):
    settings, _ = champion_pyfunc
    script = f"""
import json, mlflow, numpy as np, pandas as pd
mlflow.set_tracking_uri({settings.tracking_uri!r})
model = mlflow.pyfunc.load_model("models:/{settings.model_name}@champion")
df = pd.read_csv({str(HEART_CSV)!r})
out = np.asarray(model.predict(df))
df.loc[0, "cp"] = 4
try:
    model.predict(df)
    refused = None
except mlflow.exceptions.MlflowException as exc:
    refused = exc.message
print(json.dumps({{"shape": list(out.shape), "p": out[:3, 1].tolist(), "refused": refused}}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1025, 2]
    expected = registry.load_champion(settings).pipeline.predict_proba(
        pd.read_csv(HEART_CSV).loc[:2, list(FEATURES)]
    )[:, 1]
    np.testing.assert_allclose(result["p"], expected, rtol=0, atol=1e-12)
    assert "column 'cp': rows 1 hold 4; allowed: 0, 1, 2, 3" in result["refused"]


def test_load_version_gives_the_pipeline_of_versions_logged_as_the_sklearn_flavor(versions):
    """Versions registered before the pipeline was wrapped still serve the API."""
    model = fitted_candidate("logistic_regression", heart_split()[0], {"C": 0.25})
    trusted = sio.get_untrusted_types(data=registry.serialize(model))
    with mlflow.start_run(run_name="sklearn flavor"):
        uri = mlflow.sklearn.log_model(
            model, name="sklearn_model", skops_trusted_types=trusted
        ).model_uri
    version = registry.register(uri, versions.name, {})
    pipeline = registry.load_version(versions.name, version)
    assert isinstance(pipeline, Pipeline) and base_estimator(pipeline).C == 0.25
