"""The data: one table of features, loaders for both file formats, cleaning, validation, synthesis.

Facts this module encodes (see data/README.md): heart.csv's `target` is inverted (1 = no disease),
its categorical codes differ from UCI's, `ca == 4` / `thal == 0` stand for missing values,
and most of its rows are exact duplicates.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from heart_mlops.errors import DataError

# the feature table (numpy only: feature_table.py), re-exported: the data's names stay here
from heart_mlops.feature_table import (  # noqa: F401
    CATEGORICAL_FEATURES,
    FEATURE_SPECS,
    FEATURES,
    MISSING_CODES,
    NUMERIC_FEATURES,
    SPEC_BY_NAME,
    FeatureSpec,
    missing_as_nan,
)

log = logging.getLogger(__name__)

LABEL = "disease"  # 1 = heart disease present
CLASS_NAMES = {1: "disease", 0: "no disease"}


def disease_column(estimator) -> int:
    """The column of class 1 (disease) in `estimator.predict_proba`'s output.

    Raises ValueError when the estimator's classes do not include 1."""
    classes = [float(c) for c in getattr(estimator, "classes_", [])]
    if 1.0 not in classes:
        raise ValueError(f"the model's classes {classes} do not include 1 (disease)")
    return classes.index(1.0)


CSV_COLUMNS = (*FEATURES, "target")
UCI_COLUMNS = (*FEATURES, "num")  # the 14 fields of a UCI processed.*.data line, in order
# UCI processed.*.data codes -> heart.csv codes (verified by joining the two files).
UCI_RECODE = {
    "cp": {1: 3, 2: 1, 3: 2, 4: 0},
    "restecg": {0: 1, 1: 2, 2: 0},
    "slope": {1: 2, 2: 1, 3: 0},
    "thal": {3: 2, 6: 1, 7: 3},
}

# --- file formats: "csv" (heart.csv style), "uci" (processed.*.data), "json" (rows by name) ----

FORMAT_NAMES = {
    "csv": "a heart.csv-style file",  # a header line naming the columns
    "uci": "a UCI processed.*.data file",  # no header line, 14 fields per line
    "json": "a JSON file",  # a list of rows, each an object with the columns by name
}
EXPECTED_FILES = (
    "a heart.csv-style file (a header line naming the columns) or a UCI processed.*.data file "
    "(no header line, 14 fields per line)"
)
SEPARATOR = ","  # between fields; numbers take a decimal point
OTHER_SEPARATORS = (";", "\t", "|")
# What counts as missing: one rule per format, for every path (training, tune, predict). On top
# of it the disguised codes of MISSING_CODES are missing in every format (`mark_missing`).
MISSING_TEXT = {"csv": ("",), "uci": ("", "?")}  # a cell, stripped; JSON: null only
MISSING_RULE = {"csv": "an empty cell", "uci": "an empty cell or ?", "json": "null"}
LABEL_COLUMN = {"csv": "target", "uci": "num", "json": "target"}  # the label, as the file names it
# Columns checked in the file's own codes, before any recoding: the label, and UCI's codes.
FILE_CODES: dict[str, dict[str, tuple[int, ...]]] = {
    "csv": {"target": (0, 1)},
    "json": {"target": (0, 1)},
    "uci": {"num": (0, 1, 2, 3, 4), **{c: tuple(sorted(m)) for c, m in UCI_RECODE.items()}},
}
_HEADER_NAMES = frozenset((*CSV_COLUMNS, "num"))
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+$")
_NUMBER = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"  # a decimal number, as JSON and CSV write it


@dataclass(frozen=True)
class Dataset:
    """Clean, validated, deduplicated patients with the `disease` label."""

    frame: pd.DataFrame  # FEATURES and LABEL, one row per distinct patient record
    source_format: str  # "csv" (heart.csv), "uci" (processed.*.data) or "json"
    sha256: str
    rows_raw: int
    rows_distinct: int
    ignored_columns: tuple[str, ...] = ()  # columns of the file the model does not use

    @property
    def fingerprint(self) -> dict:
        return {
            "sha256": self.sha256,
            "format": self.source_format,
            "rows_raw": self.rows_raw,
            "rows_distinct": self.rows_distinct,
            "duplicates_removed": self.rows_raw - self.rows_distinct,
            "ignored_columns": list(self.ignored_columns),
        }


@dataclass(frozen=True)
class Table:
    """A data file as read, before any conversion: the one reader of every path."""

    cells: pd.DataFrame  # the file's columns by its names (UCI: UCI_COLUMNS), one row per data
    # row, index 0..n-1; text cells for "csv" and "uci", JSON values for "json"
    fmt: str  # "csv", "uci" or "json"


def read_table(raw: bytes) -> Table:
    """Bytes of a data file -> its Table, the format detected from the content: JSON when it
    starts with `[` or `{`, a heart.csv-style CSV when its first line is a header, else UCI.

    DataError: an empty file, no data rows, not UTF-8 text or JSON, another separator than ',',
    a line with another number of fields than the header (or than 14 without a header), a JSON
    row with other fields than the first row. The message says what the file looks like and
    what was expected."""
    if not raw.strip():
        raise DataError("the file is empty")
    if raw.lstrip()[:1] in (b"[", b"{"):
        cells, fmt = _read_json(raw), "json"
    else:
        cells, fmt = _read_text(raw)
    if cells.empty and fmt != "uci":
        where = "a header line and nothing else" if fmt == "csv" else "JSON without rows"
        raise DataError(f"no data rows: the file holds {where}")
    return Table(cells, fmt)


def _read_text(raw: bytes) -> tuple[pd.DataFrame, str]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not a CSV file: byte {exc.start} is not UTF-8 text; expected {EXPECTED_FILES}"
        ) from None
    if "\x00" in text:
        raise DataError(f"not a CSV file: it holds NUL bytes; expected {EXPECTED_FILES}")
    _check_separator(text)
    rows = _csv_rows(text)
    if not rows:
        raise DataError("the file is empty")
    if _is_header(rows[0][1]):
        names, body, fmt = _column_names(rows[0][1]), rows[1:], "csv"
    else:
        names, body, fmt = UCI_COLUMNS, rows, "uci"
    _check_fields_per_line(body, names, fmt)
    return pd.DataFrame([fields for _, fields in body], columns=list(names), dtype=object), fmt


def _check_separator(text: str) -> None:
    first = next((line for line in text.splitlines() if line.strip()), "")
    fields = {sep: len(next(csv.reader([first], delimiter=sep))) for sep in OTHER_SEPARATORS}
    found = max(fields, key=fields.__getitem__)
    commas = len(next(csv.reader([first])))
    if fields[found] > commas:
        decimals = " and decimal commas" if re.search(r"\d,\d", text) else ""
        raise DataError(
            f"the fields are separated by {found!r}{decimals}: line 1 has {fields[found]} fields "
            f"at {found!r}, {commas} at {SEPARATOR!r}; expected {SEPARATOR!r} between fields and "
            f"'.' in numbers: {EXPECTED_FILES}"
        )


def _csv_rows(text: str) -> list[tuple[int, list[str]]]:
    """-> (line number, fields) of each line that is not blank."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows = []
    try:
        for fields in reader:
            if len(fields) > 1 or (fields and fields[0].strip()):
                rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise DataError(f"not a CSV file: line {reader.line_num}: {exc}") from None
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_header(fields: list[str]) -> bool:
    """A header names a column of heart.csv, or holds words and no number (data holds numbers)."""
    names = [f.strip() for f in fields]
    if any(name in _HEADER_NAMES for name in names):
        return True
    return not any(map(_is_number, names)) and any(ch.isalpha() for name in names for ch in name)


def _column_names(fields: list[str]) -> list[str]:
    names = [f.strip() or f"Unnamed: {i}" for i, f in enumerate(fields)]  # as pandas names them
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"the header names column(s) {', '.join(twice)} more than once")
    return names


def _check_fields_per_line(rows: list[tuple[int, list[str]]], names, fmt: str) -> None:
    wrong = [(line, fields) for line, fields in rows if len(fields) != len(names)]
    if not wrong:
        return
    line, fields = wrong[0]
    more = f" ({len(wrong) - 1} more lines differ too)" if len(wrong) > 1 else ""
    found = f"line {line} has {len(fields)} fields{more}"
    if fmt == "csv":
        raise DataError(
            f"format detected: {FORMAT_NAMES['csv']} (line 1 is a header); the header names "
            f"{len(names)} columns but {found}; every line needs {len(names)} comma-separated "
            "fields"
        )
    text = [
        f"field {i + 1} holds text {f.strip()!r}"
        for i, f in enumerate(fields)
        if f.strip() not in MISSING_TEXT["uci"] and not _is_number(f.strip())
    ][:3]
    raise DataError(
        f"format detected: {FORMAT_NAMES['uci']} (line 1 names no column: no header line); "
        f"{found}, expected 14 comma-separated fields ({','.join(UCI_COLUMNS)})"
        + (f"; {', '.join(text)}" if text else "")
        + ". A file with other columns needs a header line naming its columns, as heart.csv has"
    )


def _object_without_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    for key in dict.fromkeys(keys):
        if keys.count(key) > 1:
            values = ", ".join(json.dumps(value) for name, value in pairs if name == key)
            raise DataError(
                f"JSON: an object names '{key}' {keys.count(key)} times (values {values}); "
                "each field once per row"
            )
    return dict(pairs)


def _read_json(raw: bytes) -> pd.DataFrame:
    try:  # NaN and Infinity stay text, refused as not numbers; integers beyond the float
        # range become infinite (refused by range, as in a CSV); a repeated key is refused
        doc = json.loads(
            raw.decode("utf-8-sig"),
            parse_constant=str,
            parse_int=float,
            object_pairs_hook=_object_without_repeated_keys,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"not valid JSON: {exc}") from None
    if isinstance(doc, dict) and all(isinstance(column, dict) for column in doc.values()):
        # pandas' to_json() default: {column: {row: value}} -> rows
        keys = list(dict.fromkeys(key for column in doc.values() for key in column))
        doc = [{name: col[key] for name, col in doc.items() if key in col} for key in keys]
    not_rows = not isinstance(doc, list) or not all(isinstance(row, dict) for row in doc)
    if not_rows:
        raise DataError(
            "JSON rows: expected a list of objects with the columns by name, null where a value "
            'is missing, such as [{"age": 63, "sex": 1, ...}]'
        )
    first = set(doc[0]) if doc else set()
    for number, row in enumerate(doc, start=1):
        if set(row) != first:
            lacks, extra = sorted(first - set(row)), sorted(set(row) - first)
            raise DataError(
                f"JSON row {number} has other fields than row 1"
                + (f": it lacks {', '.join(lacks)}" if lacks else "")
                + (f"; it adds {', '.join(extra)}" if extra else "")
                + "; every row names the same fields (null where a value is missing)"
            )
    return pd.DataFrame(doc, columns=list(doc[0]) if doc else [], dtype=object)


def parse(raw: bytes, *, label: bool = True) -> tuple[pd.DataFrame, str, tuple[str, ...]]:
    """Bytes of any format -> (rows of the 13 features, and the `disease` label when `label`,
    as floats in heart.csv codes, NaN where missing; the format "csv", "uci" or "json"; the
    names of the columns ignored).

    Columns other than the 13 features and the label are left out, whatever their content: a
    record is its features and label. Without `label` the label column is optional and not read.
    DataError as `read_table` and `to_frame`. Values are not range-checked here: see `validate`.
    """
    table = read_table(raw)
    frame, ignored = to_frame(table, label=label)
    return frame, table.fmt, ignored


def to_frame(table: Table, *, label: bool = True) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """A Table -> (the 13 features, and LABEL when `label`, as floats in heart.csv codes with
    NaN where the format's rule says missing, one row per data row; the names of the columns
    the model does not use).

    DataError naming every column, its rows, values and what is allowed when a column is
    missing, a cell is neither a number nor missing, or a code of the file's own (its label, a
    UCI code) is not one of that column's codes."""
    fmt, needed = table.fmt, _needed_columns(table.fmt, label)
    missing = [c for c in needed if c not in table.cells.columns]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)}; {FORMAT_NAMES[fmt]} needs the "
            f"{len(needed)} columns {','.join(needed)}"
        )
    ignored = tuple(c for c in table.cells.columns if c not in (*FEATURES, LABEL_COLUMN[fmt]))
    if ignored:
        log.warning(
            "ignoring column(s) the model does not use: %s", ", ".join(repr(c) for c in ignored)
        )
    values = _as_numbers(table.cells.loc[:, list(needed)], fmt)
    _check_file_codes(values, fmt)
    frame = values.loc[:, list(FEATURES)].copy()
    for column, mapping in UCI_RECODE.items() if fmt == "uci" else ():
        frame[column] = frame[column].map(mapping)
    if label:
        target = values[LABEL_COLUMN[fmt]]
        frame[LABEL] = (target > 0).astype(float) if fmt == "uci" else 1 - target
    return frame, ignored


def _needed_columns(fmt: str, label: bool) -> tuple[str, ...]:
    return (*FEATURES, LABEL_COLUMN[fmt]) if label else FEATURES


def _cell_numbers(column: pd.Series, fmt: str) -> tuple[pd.Series, pd.Series]:
    """One column's cells -> (floats, NaN where missing; True where neither number nor missing)."""
    if fmt == "json":
        missing = column.map(lambda v: v is None).astype(bool)
        number = column.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool))
        values = column.where(number.astype(bool)).astype(float)
    else:
        text = column.str.strip()
        missing = text.isin(MISSING_TEXT[fmt])
        values = pd.to_numeric(text.mask(missing), errors="coerce")
        huge = values.isna() & text.str.fullmatch(
            _NUMBER, na=False
        )  # digits beyond int64: out of range
        values[huge] = text[huge].map(float)
        number = values.notna()
    return values.where(~missing), ~missing & ~number.astype(bool)


def _as_numbers(cells: pd.DataFrame, fmt: str) -> pd.DataFrame:
    columns, problems = {}, []
    for name in cells.columns:
        columns[name], bad = _cell_numbers(cells[name], fmt)
        if bad.any():
            shown = dict.fromkeys(_shown(v, fmt) for v in cells.loc[bad, name].head(5))
            hint = (
                "; a decimal takes a point, as 2.3"
                if any(isinstance(v, str) and _DECIMAL_COMMA.match(v.strip()) for v in cells[name])
                else ""
            )
            problems.append(
                f"column {_column(name, fmt)} must be numeric: rows {_rows(cells.index[bad])} "
                f"hold {', '.join(shown)}; allowed: {_allowed(name, fmt)}, or "
                f"{MISSING_RULE[fmt]} for a missing value{hint}"
            )
    _raise_report(problems)
    return pd.DataFrame(columns, index=cells.index)


def _check_file_codes(values: pd.DataFrame, fmt: str) -> None:
    """The label (never missing) and UCI's codes, in the file's own codes."""
    problems = []
    for name, codes in FILE_CODES[fmt].items():
        if name not in values.columns:
            continue  # the label, not read for predictions
        column = values[name]
        bad = ~column.isin(codes) & (column.notna() | (name == LABEL_COLUMN[fmt]))
        if bad.any():
            shown = ", ".join(dict.fromkeys(_shown(v, fmt) for v in column[bad].head(5)))
            problems.append(
                f"column {_column(name, fmt)}: rows {_rows(column.index[bad])} hold {shown}; "
                f"allowed: {_allowed(name, fmt)}"
            )
    _raise_report(problems)


def _raise_report(problems: list[str]) -> None:
    if problems:
        raise DataError("data validation failed:\n  " + "\n  ".join(problems))


def _column(name: str, fmt: str) -> str:
    """A column as the file knows it: by name, and by position in a file without header."""
    return f"'{name}' (field {UCI_COLUMNS.index(name) + 1})" if fmt == "uci" else f"'{name}'"


def _allowed(name: str, fmt: str) -> str:
    if name == LABEL_COLUMN[fmt]:
        return ", ".join(map(str, FILE_CODES[fmt][name])) + " (the label, never missing)"
    if name in FILE_CODES[fmt]:
        return ", ".join(map(str, FILE_CODES[fmt][name])) + " (UCI codes)"
    return SPEC_BY_NAME[name].allowed


def _shown(value, fmt: str) -> str:
    """A value as the user wrote it: JSON for JSON, quoted text for a CSV cell."""
    if isinstance(value, float):
        return "no value" if np.isnan(value) else f"{value:g}"
    return json.dumps(value) if fmt == "json" else repr(value)


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


def _schema() -> pa.DataFrameSchema:
    columns = {}
    for spec in FEATURE_SPECS:
        if spec.codes:
            check = pa.Check.isin([float(c) for c in spec.codes], error=f"allowed: {spec.allowed}")
        else:
            check = pa.Check.in_range(spec.low, spec.high, error=f"allowed: {spec.allowed}")
        columns[spec.name] = pa.Column(float, check, nullable=True)
    # optional: rows to predict on have no label
    columns[LABEL] = pa.Column(
        float, pa.Check.isin([0.0, 1.0], error="allowed: 0, 1"), required=False
    )
    return pa.DataFrameSchema(columns, strict=False, coerce=True)


SCHEMA = _schema()


def validate(frame: pd.DataFrame) -> pd.DataFrame:
    """Check every column against the feature table; raise one report of all violations.

    `frame`: the 13 features as floats in heart.csv codes (NaN allowed everywhere), and LABEL
    when it has one. -> the same frame. DataError naming each column, its rows, values and what
    is allowed."""
    try:
        return SCHEMA.validate(frame, lazy=True)
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


def _is_numeric_value(value) -> bool:
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
            _refuse(frame, column, frame.index[~values.map(_is_numeric_value).to_numpy(dtype=bool)])


def _refuse(frame: pd.DataFrame, column: str, bad: pd.Index) -> None:
    if len(bad):
        values = ", ".join(repr(v) for v in frame.loc[bad[:5], column])
        raise DataError(f"column '{column}' must be numeric; rows {_rows(bad)} hold {values}")


def checked_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows to score, held to the API's rules: the 13 features by name, as floats.

    `frame`: one row per patient, a column per feature (other columns are ignored), of int or
    float numbers; NaN or None mean missing, and so do the missing codes (ca 4, thal 0, chol 0,
    trestbps 0), which are kept as given. -> float64 frame of shape (len(frame), 13) in FEATURES
    order, indexed 0..n-1.

    DataError naming the column, the rows (1-based) and the values when a feature column is
    missing, or holds text or booleans, or values outside
    the feature table (infinity too).
    """
    missing = [c for c in FEATURES if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)}; the model needs the 13 columns "
            f"{','.join(FEATURES)}"
        )
    features = frame.loc[:, list(FEATURES)].reset_index(drop=True)
    _check_numbers(features)
    features = features.astype("float64")
    validate(mark_missing(features))
    return features


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def load_bytes(raw: bytes) -> Dataset:
    """Parse (any format, see `read_table`), mark missing values, validate, drop duplicate
    patient records.

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


def load_for_prediction(raw: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bytes of a file to predict on, read and validated exactly as for training, the label
    column optional -> (its rows as read, `Table.cells`; the 13 features of the same rows as
    floats in heart.csv codes, NaN where missing). DataError as `load_bytes`."""
    table = read_table(raw)
    frame, _ = to_frame(table, label=False)
    return table.cells, validate(mark_missing(frame))


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
