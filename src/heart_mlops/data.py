"""The data: one table of features, loaders for both file formats, cleaning, validation, synthesis.

Facts this module encodes (see data/README.md): heart.csv's `target` is inverted (1 = no disease),
its categorical codes differ from UCI's, `ca == 4` / `thal == 0` stand for missing values,
and most of its rows are exact duplicates.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from heart_mlops.errors import DataError

log = logging.getLogger(__name__)

LABEL = "disease"  # 1 = heart disease present
CLASS_NAMES = {1: "disease", 0: "no disease"}


@dataclass(frozen=True)
class FeatureSpec:
    """One of the 13 features: its name, meaning (with unit) and allowed values, a numeric range
    `low` to `high` or categorical `codes`; the table of data/README.md ("Plausible values")."""

    name: str
    meaning: str
    low: float | None = None  # plausible range of a numeric feature
    high: float | None = None
    codes: tuple[int, ...] | None = None  # allowed codes of a categorical feature
    missing_code: float | None = None  # value that heart.csv uses for "not recorded"
    categorical: bool = False  # one-hot encoded by the model

    @property
    def allowed(self) -> str:
        """The allowed values as text for messages and the API schema: "0, 1" or "60 to 250",
        then " (0 = missing)" when heart.csv has a missing code for the feature."""
        allowed = (
            ", ".join(map(str, self.codes)) if self.codes else f"{self.low:g} to {self.high:g}"
        )
        if self.missing_code is not None:
            allowed += f" ({self.missing_code:g} = missing)"
        return allowed


# The one table of features, in the order of heart.csv and of the API's `features` list.
FEATURE_SPECS: tuple[FeatureSpec, ...] = (
    FeatureSpec("age", "age in years", 1, 120),
    FeatureSpec("sex", "1 = male, 0 = female", codes=(0, 1)),
    FeatureSpec("cp", "chest pain type (heart.csv codes)", codes=(0, 1, 2, 3), categorical=True),
    FeatureSpec("trestbps", "resting blood pressure, mmHg", 60, 250, missing_code=0),
    FeatureSpec("chol", "serum cholesterol, mg/dl", 60, 700, missing_code=0),
    FeatureSpec("fbs", "fasting blood sugar > 120 mg/dl", codes=(0, 1)),
    FeatureSpec("restecg", "resting ECG (heart.csv codes)", codes=(0, 1, 2), categorical=True),
    FeatureSpec("thalach", "maximum heart rate, bpm", 40, 250),
    FeatureSpec("exang", "exercise-induced angina", codes=(0, 1)),
    FeatureSpec("oldpeak", "ST depression, mm (negative = elevation)", -5, 10),
    FeatureSpec(
        "slope", "slope of peak ST segment (heart.csv codes)", codes=(0, 1, 2), categorical=True
    ),
    FeatureSpec("ca", "major vessels coloured by fluoroscopy", codes=(0, 1, 2, 3), missing_code=4),
    FeatureSpec(
        "thal", "thallium test (heart.csv codes)", codes=(1, 2, 3), missing_code=0, categorical=True
    ),
)
FEATURES: tuple[str, ...] = tuple(spec.name for spec in FEATURE_SPECS)
SPEC_BY_NAME = {spec.name: spec for spec in FEATURE_SPECS}
CATEGORICAL_FEATURES = tuple(s.name for s in FEATURE_SPECS if s.categorical)
NUMERIC_FEATURES = tuple(s.name for s in FEATURE_SPECS if not s.categorical)
MISSING_CODES = {s.name: s.missing_code for s in FEATURE_SPECS if s.missing_code is not None}

CSV_COLUMNS = (*FEATURES, "target")
# UCI processed.*.data codes -> heart.csv codes (verified by joining the two files).
UCI_RECODE = {
    "cp": {1: 3, 2: 1, 3: 2, 4: 0},
    "restecg": {0: 1, 1: 2, 2: 0},
    "slope": {1: 2, 2: 1, 3: 0},
    "thal": {3: 2, 6: 1, 7: 3},
}


@dataclass(frozen=True)
class Dataset:
    """Clean, validated, deduplicated patients with the `disease` label."""

    frame: pd.DataFrame  # FEATURES and LABEL, one row per distinct patient record
    source_format: str  # "csv" (heart.csv) or "uci" (processed.*.data)
    sha256: str
    rows_raw: int
    rows_distinct: int
    ignored_columns: tuple[str, ...] = ()  # columns of the file the model does not use

    @property
    def fingerprint(self) -> dict:
        """The data's identity for MLflow, version tags and the model card: sha256, format,
        rows_raw, rows_distinct, duplicates_removed (counts of rows), ignored_columns."""
        return {
            "sha256": self.sha256,
            "format": self.source_format,
            "rows_raw": self.rows_raw,
            "rows_distinct": self.rows_distinct,
            "duplicates_removed": self.rows_raw - self.rows_distinct,
            "ignored_columns": list(self.ignored_columns),
        }


def _read_csv(raw: bytes) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """A heart.csv-style file -> (its 14 columns, the names of the other columns it has)."""
    frame = pd.read_csv(io.BytesIO(raw))
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)}; a heart.csv file needs the 14 columns "
            f"{','.join(CSV_COLUMNS)}"
        )
    ignored = tuple(c for c in frame.columns if c not in CSV_COLUMNS)
    if ignored:
        log.warning(
            "ignoring column(s) the model does not use: %s", ", ".join(repr(c) for c in ignored)
        )
    return frame.loc[:, list(CSV_COLUMNS)], ignored


def _read_uci(raw: bytes) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(raw), header=None, na_values="?")
    if frame.shape[1] != 14:
        raise DataError(
            f"a UCI processed.*.data file has 14 comma-separated fields per line, "
            f"this one has {frame.shape[1]}"
        )
    frame.columns = [*FEATURES, "num"]
    return frame


def detect_format(raw: bytes) -> str:
    """-> "csv" when the first non-blank line holds a letter (heart.csv's header), else "uci"
    (a headerless processed.*.data file). Only a guess: `parse` reports a file that is neither."""
    first_line = raw.lstrip().split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return "csv" if any(ch.isalpha() for ch in first_line) else "uci"


def parse(raw: bytes) -> tuple[pd.DataFrame, str, tuple[str, ...]]:
    """Bytes of either format -> (rows of the features and the `disease` label in heart.csv
    codes, the format "csv" or "uci", the names of the columns ignored).

    Columns other than the 13 features and the label are left out, whatever their content: a
    record is its features and label. Values are not range-checked here: see `validate`.
    """
    if not raw.strip():
        raise DataError("the data file is empty")
    fmt = detect_format(raw)
    ignored: tuple[str, ...] = ()
    try:
        if fmt == "csv":
            frame, ignored = _read_csv(raw)
        else:
            frame = _read_uci(raw)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"not a CSV file: {exc}") from exc
    _check_numeric(frame)
    frame = frame.astype(float)
    if fmt == "csv":
        frame[LABEL] = 1 - frame.pop("target")
    else:
        num = frame.pop("num")
        frame[LABEL] = (num > 0).astype(float).where(num.notna())
        for column, mapping in UCI_RECODE.items():
            mapped = frame[column].map(mapping)
            # a code outside the UCI mapping becomes -1, so validation reports it
            frame[column] = mapped.where(mapped.notna() | frame[column].isna(), -1.0)
    return frame, fmt, ignored


def _check_numeric(frame: pd.DataFrame) -> None:
    """Columns of a file -> numbers in place; text that is not a number is refused."""
    for column in frame.columns:
        converted = pd.to_numeric(frame[column], errors="coerce")
        _refuse(frame, column, frame.index[converted.isna() & frame[column].notna()])
        frame[column] = converted


def _is_number(value) -> bool:
    """An int or float (numpy's too) or a missing value (None); booleans and text are not."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _check_numbers(frame: pd.DataFrame) -> None:
    """Columns of rows to score hold numbers, not text or booleans, as the API's bodies must."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype.kind not in "iuf":
            _refuse(frame, column, frame.index[~values.map(_is_number).to_numpy(dtype=bool)])


def _refuse(frame: pd.DataFrame, column: str, bad: pd.Index) -> None:
    if len(bad):
        values = ", ".join(repr(v) for v in frame.loc[bad[:5], column])
        raise DataError(f"column '{column}' must be numeric; rows {_rows(bad)} hold {values}")


def _rows(index) -> str:
    # data rows are reported 1-based, as in a spreadsheet without the header
    shown = ", ".join(str(i + 1) for i in list(index)[:10])
    return shown + (f" and {len(index) - 10} more" if len(index) > 10 else "")


def mark_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Disguised missing codes (ca 4, thal 0, chol 0, trestbps 0) -> NaN."""
    frame = frame.copy()
    for column, code in MISSING_CODES.items():
        frame.loc[frame[column] == code, column] = np.nan
    return frame


def _schema(*, label: bool) -> pa.DataFrameSchema:
    columns = {}
    for spec in FEATURE_SPECS:
        if spec.codes:
            check = pa.Check.isin([float(c) for c in spec.codes], error=f"allowed: {spec.allowed}")
        else:
            check = pa.Check.in_range(spec.low, spec.high, error=f"allowed: {spec.allowed}")
        columns[spec.name] = pa.Column(float, check, nullable=True)
    if label:
        columns[LABEL] = pa.Column(float, pa.Check.isin([0.0, 1.0], error="allowed: 0, 1"))
    return pa.DataFrameSchema(columns, strict=False, coerce=True)


SCHEMA = _schema(label=True)
FEATURE_SCHEMA = _schema(label=False)  # rows to score: the features alone


def validate(frame: pd.DataFrame, *, label: bool = True) -> pd.DataFrame:
    """Check every column against the feature table, and the label unless `label` is False;
    raise one DataError reporting all violations (column, rows 1-based, values, allowed)."""
    try:
        return (SCHEMA if label else FEATURE_SCHEMA).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        lines = []
        for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
            values = ", ".join(
                f"{v:g}" if isinstance(v, float) else str(v) for v in group["failure_case"].head(5)
            )
            rows = _rows(group["index"].dropna().astype(int).tolist())
            lines.append(f"column '{column}': rows {rows} hold {values}; {check}")
        raise DataError("data validation failed:\n  " + "\n  ".join(lines)) from None


def checked_features(frame: pd.DataFrame, *, from_file: bool = False) -> pd.DataFrame:
    """Rows to score, held to the API's rules: the 13 features by name, as floats.

    `frame`: one row per patient, a column per feature (other columns are ignored), of int or
    float numbers; NaN or None mean missing, and so do the missing codes (ca 4, thal 0, chol 0,
    trestbps 0), which are kept as given. `from_file`: the cells of a file, where text that
    reads as a number is that number. -> float64 frame of shape (len(frame), 13) in FEATURES
    order, indexed 0..n-1.

    DataError naming the column, the rows (1-based) and the values when a feature column is
    missing, or holds text (other than numbers, `from_file`) or booleans, or values outside
    the feature table (infinity too).
    """
    missing = [c for c in FEATURES if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)}; the model needs the 13 columns "
            f"{','.join(FEATURES)}"
        )
    features = frame.loc[:, list(FEATURES)].reset_index(drop=True)
    (_check_numeric if from_file else _check_numbers)(features)
    features = features.astype("float64")
    validate(mark_missing(features), label=False)
    return features


def sha256(raw: bytes) -> str:
    """The SHA-256 of the file's bytes, 64 hex digits (data/README.md lists those of the files)."""
    return hashlib.sha256(raw).hexdigest()


def load_bytes(raw: bytes) -> Dataset:
    """Parse, validate, mark missing values, drop duplicate patient records.

    A duplicate is a row with the same 13 features and label as an earlier one; other columns
    of the file (an index, an id, a site name) are ignored and named in the Dataset.
    DataError naming the column, rows and values when the data is invalid or too small."""
    frame, fmt, ignored = parse(raw)
    frame = validate(mark_missing(frame))
    rows_raw = len(frame)
    frame = frame.drop_duplicates(subset=[*FEATURES, LABEL], ignore_index=True)
    log.info(
        "data: %d rows, %d duplicate records removed, %d distinct patients",
        rows_raw,
        rows_raw - len(frame),
        len(frame),
    )
    if frame[LABEL].nunique() < 2 or len(frame) < 20:
        raise DataError(
            f"too little data to train: {len(frame)} distinct rows, classes "
            f"{sorted(frame[LABEL].unique().tolist())}; need at least 20 rows and both classes"
        )
    return Dataset(frame, fmt, sha256(raw), rows_raw, len(frame), ignored)


def min_rows_per_class(holdout_fraction: float, cv_folds: int) -> int:
    """Distinct rows each class needs for a stratified holdout of `holdout_fraction` and
    `cv_folds`-fold stratified CV on the rest: an expected share of at least one row in the
    holdout, and `cv_folds` rows left for training with one to spare for the split's rounding."""
    rows = cv_folds + 1
    while holdout_fraction * rows < 1 or rows - math.ceil(holdout_fraction * rows) - 1 < cv_folds:
        rows += 1
    return rows


def require_features(frame: pd.DataFrame, part: str = "any row") -> None:
    """DataError naming the features of `frame` with no value in any row (all missing or a
    missing code): a model cannot learn from them."""
    empty = [column for column in FEATURES if frame[column].isna().all()]
    if empty:
        raise DataError(
            f"column(s) {', '.join(repr(c) for c in empty)} hold no value in {part} (all "
            "missing or a missing code): a model cannot learn from them; supply data that "
            "records them"
        )


def require_trainable(frame: pd.DataFrame, *, holdout_fraction: float, cv_folds: int) -> None:
    """DataError unless `frame` (distinct rows with LABEL) can be split and cross-validated:
    every feature has a value in some row, and each class has `min_rows_per_class` rows."""
    require_features(frame)
    counts = frame[LABEL].value_counts()
    needed = min_rows_per_class(holdout_fraction, cv_folds)
    if counts.min() < needed:
        found = ", ".join(
            f"{CLASS_NAMES[int(label)]} {int(counts.get(label, 0))}" for label in (1.0, 0.0)
        )
        raise DataError(
            f"too few patients of one class: {found} distinct rows; each class needs at least "
            f"{needed} for a stratified {holdout_fraction:.0%} holdout and {cv_folds}-fold CV "
            "(HEART_MLOPS_HOLDOUT_FRACTION, HEART_MLOPS_CV_FOLDS)"
        )


def synthetic_csv(rows: int = 600, seed: int = 42) -> bytes:
    """A seeded synthetic data set in heart.csv's format (same schema, same label inversion)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(54, 9, rows).clip(29, 77).round()
    sex = rng.binomial(1, 0.68, rows)
    cp = rng.choice([0, 1, 2, 3], rows, p=[0.47, 0.17, 0.28, 0.08])
    trestbps = rng.normal(131, 17, rows).clip(94, 200).round()
    chol = rng.normal(246, 50, rows).clip(126, 564).round()
    fbs = rng.binomial(1, 0.15, rows)
    restecg = rng.choice([0, 1, 2], rows, p=[0.48, 0.5, 0.02])
    exang = rng.binomial(1, 0.33, rows)
    slope = rng.choice([0, 1, 2], rows, p=[0.07, 0.46, 0.47])
    ca = rng.choice([0, 1, 2, 3], rows, p=[0.58, 0.21, 0.13, 0.08])
    thal = rng.choice([1, 2, 3], rows, p=[0.06, 0.55, 0.39])
    thalach = (rng.normal(150, 22, rows) - 0.5 * (age - 54)).clip(71, 202).round()
    oldpeak = rng.gamma(1.0, 1.0, rows).clip(0, 6.2).round(1)
    logit = (
        -0.4
        + 0.04 * (age - 54)
        + 0.9 * sex
        + 1.3 * (cp == 0)
        + 0.8 * exang
        + 0.6 * oldpeak
        + 0.8 * ca
        + 1.2 * (thal == 3)
        - 0.03 * (thalach - 150)
        + 0.5 * (slope == 1)
    )
    disease = rng.binomial(1, 1 / (1 + np.exp(-logit)))
    frame = pd.DataFrame(
        {
            "age": age,
            "sex": sex,
            "cp": cp,
            "trestbps": trestbps,
            "chol": chol,
            "fbs": fbs,
            "restecg": restecg,
            "thalach": thalach,
            "exang": exang,
            "oldpeak": oldpeak,
            "slope": slope,
            "ca": ca,
            "thal": thal,
            "target": 1 - disease,
        }
    )
    return frame.to_csv(index=False).encode()
