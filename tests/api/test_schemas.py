"""Request bodies and validation messages, without an app: shapes, rows and error messages."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from heart_mlops.api import schemas
from heart_mlops.data import FEATURES
from tests.api.conftest import SEED


def errors_of(adapter, body: bytes, max_rows: int = 3) -> list[dict]:
    with pytest.raises(ValidationError) as raised:
        adapter.validate_json(body)
    return schemas.describe_errors(raised.value, max_rows=max_rows)


def test_both_shapes_give_the_same_row_with_nan_for_null():
    patient = dict(zip(FEATURES, SEED, strict=True)) | {"chol": None}
    named = schemas.PREDICT_REQUEST.validate_python({"patient": patient})
    coded = schemas.PREDICT_REQUEST.validate_python({"features": SEED})
    row = schemas.feature_row(named)
    assert math.isnan(row[FEATURES.index("chol")])
    assert [v for i, v in enumerate(row) if i != FEATURES.index("chol")] == [
        v for i, v in enumerate(schemas.feature_row(coded)) if i != FEATURES.index("chol")
    ]


def test_feature_matrix_is_rows_by_13_floats():
    batch = schemas.batch_request(3).validate_python(
        {"instances": [{"features": SEED}, {"patient": dict.fromkeys(FEATURES)}]}
    )
    matrix = schemas.feature_matrix(batch.instances)
    assert matrix.shape == (2, len(FEATURES)) and matrix.dtype == np.float64
    assert matrix[0].tolist() == SEED and np.isnan(matrix[1]).all()


def test_the_batch_adapter_is_built_once_per_limit():
    assert schemas.batch_request(3) is schemas.batch_request(3)
    assert schemas.batch_request(3) is not schemas.batch_request(4)


@pytest.mark.parametrize(
    "body, field, message",
    [
        (b"{", "body", "the body is not valid JSON: "),
        (b'{"features": [63, 1]}', "features", "expected 13 values in the order age, "),
        (b'{"features": "63"}', "features", "'63' is not a list of 13 numbers"),
        (b'{"patient": [1]}', "patient", "[1] is not an object with the features by name"),
        (
            b'{"features": [63, 1, 3, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1], "x": 1}',
            "x",
            "unknown field 'x'",
        ),
        (
            b'{"features": ["63", 1, 3, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1]}',
            "features[0] (age)",
            "'63' is not a number",
        ),
        (
            b'{"features": [63, 1, 9, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1]}',
            "features[2] (cp)",
            "9 is not allowed",
        ),
    ],
)
def test_each_error_kind_names_the_field_and_what_is_wrong(body, field, message):
    first = errors_of(schemas.PREDICT_REQUEST, body)[0]
    assert first["field"] == field and first["message"].startswith(message)


def test_a_missing_named_value_hints_at_null_and_says_what_is_allowed():
    patient = dict(zip(FEATURES, SEED, strict=True))
    del patient["ca"]
    (error,) = errors_of(schemas.PREDICT_REQUEST, json.dumps({"patient": patient}).encode())
    assert error == {
        "field": "patient.ca",
        "value": None,
        "message": "required field 'ca' is missing (use null if not recorded)",
        "allowed": error["allowed"],
    }
    assert error["allowed"].endswith("; or null")


def test_a_batch_over_the_limit_quotes_the_limit():
    rows = b", ".join([b'{"features": [63, 1, 3, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1]}'] * 4)
    (error,) = errors_of(schemas.batch_request(3), b'{"instances": [' + rows + b"]}")
    assert error["field"] == "instances" and error["message"] == "a batch holds 1 to 3 rows; got 4"


def test_summary_is_the_first_error_and_how_many_more():
    errors = errors_of(
        schemas.PREDICT_REQUEST, b'{"features": [0, 1, 9, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1]}'
    )
    assert len(errors) == 2
    assert schemas.summary(errors) == (
        f"features[0] (age): 0 is not allowed; allowed: {errors[0]['allowed']} (and 1 more)"
    )
