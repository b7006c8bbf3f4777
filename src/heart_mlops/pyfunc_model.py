"""The registered model as MLflow loads it: the sklearn pipeline behind the API's input rules.

`mlflow.pyfunc.load_model(...).predict(df)` and `mlflow models serve` run `ClinicalModel`:
it holds rows to `data.checked_features` (the feature table the API uses) before the
pipeline scores them, so every consumer of the registry gets the API's rules. The pipeline
itself is the version's skops artifact, reachable as `ClinicalModel.pipeline`.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from heart_mlops import registry
from heart_mlops.data import checked_features
from heart_mlops.errors import DataError


class ClinicalModel(mlflow.pyfunc.PythonModel):
    """P(no disease), P(disease) from rows of the 13 clinical features, refusing values outside
    the feature table."""

    pipeline = None  # the fitted sklearn Pipeline, set by load_context

    def load_context(self, context) -> None:
        """Load the pipeline from the version's artifact `registry.PIPELINE_ARTIFACT`."""
        path = Path(context.artifacts[registry.PIPELINE_ARTIFACT])
        self.pipeline = registry.deserialize(path.read_bytes())

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        """Rows (n) with a column per feature, int or float, NaN = missing -> array (n, 2):
        P(no disease), P(disease) per row.

        MlflowException (INVALID_PARAMETER_VALUE; 400 from `mlflow models serve`) naming the
        column, rows (1-based), values and what is allowed, for rows `checked_features` refuses.
        """
        try:
            rows = checked_features(model_input)
        except DataError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from exc
        if rows.empty:
            return np.empty((0, 2))
        return self.pipeline.predict_proba(rows)
