"""Step results cross XCom as plain JSON dicts and come back equal."""

from __future__ import annotations

import dataclasses
import json

import pytest

from heart_mlops.step_results import (
    Evaluated,
    Extracted,
    Prepared,
    Registered,
    Selected,
    StepResult,
    Trained,
    Tuned,
)

EXTRACTED = Extracted(
    run_key="manual__2024-05-01T00:00:00+00:00",
    prefix="s3://store/runs/r1",
    raw_uri="s3://store/runs/r1/raw/data.csv",
    source="data/heart.csv",
    synthetic=False,
    parent_run_id="0123abcd",
    sha256="ea77" * 16,
)
PREPARED = Prepared.extending(
    EXTRACTED,
    validated_uri="s3://store/runs/r1/validated.parquet",
    train_uri="s3://store/runs/r1/train.parquet",
    holdout_uri="s3://store/runs/r1/holdout.parquet",
    fingerprint={
        "sha256": "ea77" * 16,
        "format": "csv",
        "rows_raw": 1025,
        "rows_distinct": 302,
        "duplicates_removed": 723,
    },
    rows_train=241,
    rows_holdout=61,
)
TRAINED = Trained(
    name="svm",
    model_uri="s3://store/runs/r1/models/svm.skops",
    run_id="r-svm",
    params={"kernel": "rbf", "C": 1.0, "gamma": "scale"},
)
EVALUATED = Evaluated.extending(
    TRAINED, metrics={"cv_roc_auc_mean": 0.91, "cv_roc_auc_std": 0.02, "holdout_roc_auc": 0.88}
)
SELECTED = Selected.extending(
    EVALUATED,
    selection_metric="roc_auc",
    ranking=[
        {"name": "svm", "cv_roc_auc_mean": 0.91},
        {"name": "random_forest", "cv_roc_auc_mean": 0.9},
    ],
)
TUNED = Tuned(
    name="svm",
    label="tuned",
    params={"C": 3.5, "kernel": "linear"},
    model_uri="s3://store/runs/r1/models/final.skops",
    cv={"cv_roc_auc_mean": 0.92, "cv_roc_auc_std": 0.01},
    selection_metric="roc_auc",
    trials=20,
    threshold=0.42,
    evidence_uri="s3://store/runs/r1/reports/clinical_evidence.json",
)
REGISTERED = Registered(
    model_name="heart_disease_classifier",
    version="4",
    champion=False,
    decision="holdout_roc_auc 0.8800 does not beat champion v3 0.9000",
    candidate="svm",
    label="tuned",
    params={"C": 3.5, "kernel": "linear"},
    cv={"cv_roc_auc_mean": 0.92},
    holdout={"holdout_roc_auc": 0.88},
    threshold=0.42,
    synthetic=False,
    run_key="manual__2024-05-01T00:00:00+00:00",
)
RESULTS = [EXTRACTED, PREPARED, TRAINED, EVALUATED, SELECTED, TUNED, REGISTERED]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Wrapping(StepResult):
    """A result holding another result: from_xcom rebuilds the nested one too."""

    data: Prepared
    note: str


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_result_survives_a_json_round_trip_through_xcom(result):
    payload = json.loads(json.dumps(result.to_xcom()))
    back = type(result).from_xcom(payload)
    assert back == result
    assert type(back) is type(result)


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_xcom_payload_is_a_dict_of_every_field(result):
    payload = result.to_xcom()
    assert set(payload) == {f.name for f in dataclasses.fields(result)}
    assert json.loads(json.dumps(payload)) == payload


def test_extending_keeps_the_base_fields_and_adds_the_new_ones():
    assert isinstance(PREPARED, Extracted)
    for field in dataclasses.fields(Extracted):
        assert getattr(PREPARED, field.name) == getattr(EXTRACTED, field.name)
    assert (PREPARED.rows_train, PREPARED.rows_holdout) == (241, 61)
    assert SELECTED.model_uri == TRAINED.model_uri
    assert SELECTED.metrics["holdout_roc_auc"] == 0.88


def test_extending_without_a_field_of_the_subclass_fails():
    with pytest.raises(TypeError, match="rows_holdout"):
        Prepared.extending(
            EXTRACTED,
            validated_uri="v",
            train_uri="t",
            holdout_uri="h",
            fingerprint={},
            rows_train=1,
        )


def test_nested_result_becomes_a_dict_and_comes_back_as_its_class():
    wrapping = Wrapping(data=PREPARED, note="n")
    payload = json.loads(json.dumps(wrapping.to_xcom()))
    assert payload["data"]["train_uri"] == PREPARED.train_uri
    back = Wrapping.from_xcom(payload)
    assert type(back.data) is Prepared
    assert back == wrapping


def test_payload_of_a_subclass_reads_as_its_base():
    """The fields a downstream task needs, from a richer result's XCom."""
    assert Extracted.from_xcom(PREPARED.to_xcom()) == EXTRACTED
    assert Trained.from_xcom(SELECTED.to_xcom()) == TRAINED


@pytest.mark.parametrize(
    "result, missing",
    [
        (PREPARED, "holdout_uri"),
        (PREPARED, "run_key"),
        (REGISTERED, "version"),
        (SELECTED, "ranking"),
    ],
)
def test_missing_field_raises_key_error_naming_it(result, missing):
    payload = result.to_xcom()
    del payload[missing]
    with pytest.raises(KeyError, match=missing):
        type(result).from_xcom(payload)


def test_missing_field_of_a_nested_result_raises_key_error_naming_it():
    payload = Wrapping(data=PREPARED, note="n").to_xcom()
    del payload["data"]["sha256"]
    with pytest.raises(KeyError, match="sha256"):
        Wrapping.from_xcom(payload)
