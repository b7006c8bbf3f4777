"""The one table of the 13 features (names, clinical titles, units, allowed values, missing
codes) and the missing-code rule.

Needs numpy only, so processes that need the table and nothing else of the data (the prediction
log's writer) do not import pandas. `heart_mlops.data` re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: its name in heart.csv and the API, how a clinician calls it, its unit, and
    the values it may take (a plausible range, or codes with what each code means)."""

    name: str
    title: str  # the clinical name, as a form labels it
    unit: str | None = None
    low: float | None = None  # plausible range of a numeric feature
    high: float | None = None
    codes: tuple[int, ...] | None = None  # allowed codes of a coded feature
    code_labels: tuple[str, ...] | None = None  # what each code means, in the order of `codes`
    missing_code: float | None = None  # value that heart.csv uses for "not recorded"
    categorical: bool = False  # one-hot encoded by the model
    note: str | None = None  # how to read a value, when the title and unit do not say

    def __post_init__(self) -> None:
        if self.code_labels is not None and len(self.code_labels) != len(self.codes or ()):
            raise ValueError(f"{self.name}: one label per code")

    @property
    def labelled_codes(self) -> tuple[tuple[int, str], ...]:
        """(code, what it means) of each allowed code; the code itself where it has no label.
        Empty for a numeric feature."""
        labels = self.code_labels or tuple(map(str, self.codes or ()))
        return tuple(zip(self.codes or (), labels, strict=True))

    @property
    def meaning(self) -> str:
        """The feature in words: title, unit, what its codes mean (heart.csv codes)."""
        text = self.title + (f", {self.unit}" if self.unit else "")
        if self.code_labels:
            text += " (" + ", ".join(f"{code} = {label}" for code, label in self.labelled_codes)
            text += ")"
        return text + (f" ({self.note})" if self.note else "")

    @property
    def allowed(self) -> str:
        """The values the API and the data schema accept, e.g. '1 to 120', '0, 1, 2, 3 (4 =
        missing)'."""
        allowed = (
            ", ".join(map(str, self.codes)) if self.codes else f"{self.low:g} to {self.high:g}"
        )
        if self.missing_code is not None:
            allowed += f" ({self.missing_code:g} = missing)"
        return allowed


# The one table of features, in the order of heart.csv and of the API's `features` list. Codes
# are heart.csv's, which differ from UCI's (UCI_RECODE); their labels are the UCI meanings
# carried over by that mapping (data/README.md).
FEATURE_SPECS: tuple[FeatureSpec, ...] = (
    FeatureSpec("age", "Age", "years", 1, 120),
    FeatureSpec("sex", "Sex", codes=(0, 1), code_labels=("female", "male")),
    FeatureSpec(
        "cp",
        "Chest pain type",
        codes=(0, 1, 2, 3),
        code_labels=("asymptomatic", "atypical angina", "non-anginal pain", "typical angina"),
        categorical=True,
    ),
    FeatureSpec("trestbps", "Resting blood pressure", "mmHg", 60, 250, missing_code=0),
    FeatureSpec("chol", "Serum cholesterol", "mg/dl", 60, 700, missing_code=0),
    FeatureSpec("fbs", "Fasting blood sugar > 120 mg/dl", codes=(0, 1), code_labels=("no", "yes")),
    FeatureSpec(
        "restecg",
        "Resting ECG",
        codes=(0, 1, 2),
        code_labels=("left ventricular hypertrophy", "normal", "ST-T wave abnormality"),
        categorical=True,
    ),
    FeatureSpec("thalach", "Maximum heart rate", "bpm", 40, 250),
    FeatureSpec("exang", "Exercise-induced angina", codes=(0, 1), code_labels=("no", "yes")),
    FeatureSpec("oldpeak", "ST depression by exercise", "mm", -5, 10, note="negative = elevation"),
    FeatureSpec(
        "slope",
        "Slope of the peak exercise ST segment",
        codes=(0, 1, 2),
        code_labels=("downsloping", "flat", "upsloping"),
        categorical=True,
    ),
    FeatureSpec("ca", "Major vessels coloured by fluoroscopy", codes=(0, 1, 2, 3), missing_code=4),
    FeatureSpec(
        "thal",
        "Thallium stress test",
        codes=(1, 2, 3),
        code_labels=("fixed defect", "normal", "reversible defect"),
        missing_code=0,
        categorical=True,
    ),
)
FEATURES: tuple[str, ...] = tuple(spec.name for spec in FEATURE_SPECS)
SPEC_BY_NAME = {spec.name: spec for spec in FEATURE_SPECS}
CATEGORICAL_FEATURES = tuple(s.name for s in FEATURE_SPECS if s.categorical)
NUMERIC_FEATURES = tuple(s.name for s in FEATURE_SPECS if not s.categorical)
MISSING_CODES = {s.name: s.missing_code for s in FEATURE_SPECS if s.missing_code is not None}
_MISSING_CODE_COLUMNS = np.array([FEATURES.index(name) for name in MISSING_CODES])
_MISSING_CODE_VALUES = np.array(list(MISSING_CODES.values()), dtype=float)


def missing_as_nan(matrix: np.ndarray) -> np.ndarray:
    """A float matrix (n, 13) in FEATURES order with each disguised missing code
    (MISSING_CODES) replaced by NaN, in place: what the model sees (features.ClinicalInput).
    -> the same matrix"""
    codes = matrix[:, _MISSING_CODE_COLUMNS]
    codes[codes == _MISSING_CODE_VALUES] = np.nan
    matrix[:, _MISSING_CODE_COLUMNS] = codes
    return matrix
