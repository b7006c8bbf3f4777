"""The preprocessor inside every model: missing values, disguised codes, columns, unseen codes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from heart_mlops.data import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES
from heart_mlops.features import build_preprocessor, transformed_feature_names

# four patients with every code of every categorical feature among them (heart.csv codes)
ROWS = pd.DataFrame(
    [
        [63, 1, 3, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1],
        [37, 1, 2, 130, 250, 0, 1, 187, 0, 3.5, 0, 0, 2],
        [41, 0, 1, 130, 204, 0, 0, 172, 0, 1.4, 2, 1, 3],
        [56, 1, 0, 120, 236, 0, 2, 178, 1, 0.8, 1, 3, 3],
        [57, 0, 0, 140, 354, 0, 1, 163, 1, 0.6, 2, 2, 3],
    ],
    columns=FEATURES,
    dtype=float,
)
NAMES = transformed_feature_names()


def transformed(fit_rows: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    matrix = build_preprocessor().fit(fit_rows).transform(rows)
    return pd.DataFrame(matrix, columns=NAMES, index=rows.index)


def with_values(**values) -> pd.DataFrame:
    row = ROWS.iloc[[0]].copy()
    for name, value in values.items():
        row[name] = value
    return row


def test_output_has_one_column_per_numeric_feature_and_per_categorical_code():
    out = build_preprocessor().fit(ROWS).transform(ROWS)
    assert out.shape == (5, 22) and len(NAMES) == 22
    assert NAMES[:9] == [n for n in FEATURES if n not in CATEGORICAL_FEATURES]
    assert NAMES[9:13] == ["cp=0", "cp=1", "cp=2", "cp=3"]
    assert NAMES[-3:] == ["thal=1", "thal=2", "thal=3"]


def test_names_are_the_preprocessors_own_columns_in_order():
    sklearn_names = build_preprocessor().fit(ROWS).get_feature_names_out()
    # sklearn writes a one-hot column `cp_0.0` where the estimator's names say `cp=0`
    assert [n.replace("_", "=").removesuffix(".0") for n in sklearn_names] == NAMES


def test_numeric_columns_are_standardised_on_the_fitted_rows():
    out = transformed(ROWS, ROWS)
    numeric = out[[n for n in NUMERIC_FEATURES if n in out]]
    np.testing.assert_allclose(numeric.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(numeric.std(ddof=0), 1, atol=1e-12)


def test_each_categorical_code_lights_its_own_column():
    out = transformed(ROWS, ROWS)
    for name in CATEGORICAL_FEATURES:
        block = out[[n for n in NAMES if n.startswith(f"{name}=")]]
        assert (block.sum(axis=1) == 1).all(), name
        lit = block.idxmax(axis=1).tolist()
        assert lit == [f"{name}={code:g}" for code in ROWS[name]], name


def test_missing_numeric_value_is_the_median_of_the_fitted_rows():
    out = transformed(ROWS, with_values(age=np.nan, oldpeak=np.nan))
    median = transformed(
        ROWS, with_values(age=ROWS["age"].median(), oldpeak=ROWS["oldpeak"].median())
    )
    np.testing.assert_array_equal(out.to_numpy(), median.to_numpy())
    assert out.loc[0, "age"] != transformed(ROWS, ROWS.iloc[[0]]).loc[0, "age"]


def test_missing_categorical_value_is_the_most_frequent_code():
    out = transformed(ROWS, with_values(thal=np.nan, cp=np.nan))
    assert out.loc[0, "thal=3"] == 1 and out.loc[0, "cp=0"] == 1  # thal 3: three of five, cp 0: two
    assert out.filter(like="thal=").sum(axis=1).item() == 1


@pytest.mark.parametrize("name, code", [("trestbps", 0), ("chol", 0), ("ca", 4), ("thal", 0)])
def test_disguised_missing_code_is_treated_as_missing(name, code):
    np.testing.assert_array_equal(
        transformed(ROWS, with_values(**{name: code})).to_numpy(),
        transformed(ROWS, with_values(**{name: np.nan})).to_numpy(),
    )


def test_disguised_missing_codes_in_the_fitted_rows_do_not_shift_the_imputation():
    coded = ROWS.copy()
    coded.loc[0, ["chol", "ca", "thal"]] = [0, 4, 0]
    missing = ROWS.copy()
    missing.loc[0, ["chol", "ca", "thal"]] = np.nan
    np.testing.assert_array_equal(
        transformed(coded, coded).to_numpy(), transformed(missing, missing).to_numpy()
    )


def test_a_row_with_nothing_recorded_is_transformed_to_finite_values():
    empty = pd.DataFrame([[np.nan] * len(FEATURES)], columns=FEATURES)
    out = transformed(ROWS, empty)
    assert np.isfinite(out.to_numpy()).all()


@pytest.mark.filterwarnings("ignore:Found unknown categories")
def test_unseen_categorical_code_sets_no_column_and_raises_nothing():
    out = transformed(ROWS, with_values(cp=7, restecg=-1))
    assert (out.filter(like="cp=") == 0).all(axis=None)
    assert (out.filter(like="restecg=") == 0).all(axis=None)
    assert out.loc[0, "thal=1"] == 1  # the row's other codes are kept


def test_a_code_absent_from_the_fitted_rows_still_has_its_column():
    fit_rows = ROWS[ROWS["cp"] != 3]
    out = transformed(fit_rows, with_values(cp=3))
    assert out.shape[1] == 22
    assert out.loc[0, "cp=3"] == 1 and out.filter(like="cp=").sum(axis=1).item() == 1
