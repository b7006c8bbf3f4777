"""The code MLflow runs to load a registered model (models from code): `ClinicalModel`.

`registry.log_model` logs this file with each model; it is never imported.
"""

from mlflow.models import set_model

from heart_mlops.pyfunc_model import ClinicalModel

set_model(ClinicalModel())
