"""The model's preprocessing: raw clinical values in, model-ready matrix out.

It lives inside every logged model, so training, the registry and the API treat the
disguised missing codes and unseen values alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from heart_mlops.data import CATEGORICAL_FEATURES, FEATURES, SPEC_BY_NAME, missing_as_nan


class ClinicalInput(TransformerMixin, BaseEstimator):
    """Takes the 13 features by name (DataFrame) or by position (array) and returns a float
    matrix in the canonical order, with the disguised missing codes replaced by NaN."""

    def fit(self, X, y=None):
        """Nothing to learn: the 13 features are fixed (data.FEATURES). -> self"""
        self.n_features_in_ = len(FEATURES)
        return self

    def transform(self, X):
        """X: DataFrame with the 13 FEATURES columns (others ignored) or array (n, 13) in that
        order -> float ndarray (n, 13), missing codes as NaN. ValueError for another width;
        KeyError for a DataFrame lacking a feature column."""
        if isinstance(X, pd.DataFrame):
            X = X.loc[:, list(FEATURES)]
        matrix = np.array(X, dtype=float, copy=True, ndmin=2)
        if matrix.shape[1] != len(FEATURES):
            raise ValueError(f"expected {len(FEATURES)} features, got {matrix.shape[1]}")
        return missing_as_nan(matrix)

    def get_feature_names_out(self, input_features=None):
        """The 13 FEATURES names in the order of `transform`'s columns; `input_features` unused."""
        return np.array(FEATURES, dtype=object)


def build_preprocessor() -> Pipeline:
    """The unfitted preprocessing Pipeline: ClinicalInput, then median imputation and scaling of
    the numeric features and mode imputation and one-hot encoding of the categorical ones (codes
    from FEATURE_SPECS, unseen codes all zeros). Output columns: `transformed_feature_names`."""
    categorical = [FEATURES.index(name) for name in CATEGORICAL_FEATURES]
    numeric = [i for i in range(len(FEATURES)) if i not in categorical]
    encoder = OneHotEncoder(
        categories=[list(map(float, SPEC_BY_NAME[name].codes)) for name in CATEGORICAL_FEATURES],
        handle_unknown="ignore",
    )
    columns = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                numeric,
            ),
            (
                "categorical",
                Pipeline(
                    [("impute", SimpleImputer(strategy="most_frequent")), ("onehot", encoder)]
                ),
                categorical,
            ),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline([("clinical_input", ClinicalInput()), ("columns", columns)])


def transformed_feature_names() -> list[str]:
    """Names of the columns the estimator sees, in order (for importances and coefficients)."""
    numeric = [name for name in FEATURES if name not in CATEGORICAL_FEATURES]
    onehot = [
        f"{name}={code}" for name in CATEGORICAL_FEATURES for code in SPEC_BY_NAME[name].codes
    ]
    return numeric + onehot
