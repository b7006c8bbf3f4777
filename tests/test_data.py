"""The data facts the pipeline depends on, checked against the repository's files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heart_mlops.data import (
    FEATURE_SPECS,
    FEATURES,
    LABEL,
    SCHEMA,
    SPEC_BY_NAME,
    UCI_RECODE,
    checked_features,
    load_bytes,
    load_for_prediction,
    mark_missing,
    min_rows_per_class,
    parse,
    synthetic_csv,
)
from heart_mlops.errors import DataError
from heart_mlops.evaluation import split_holdout
from heart_mlops.settings import PROJECT_ROOT
from tests.bad_inputs import (
    JSON_NOT_NUMBERS,
    NO_LABEL,
    NO_ROWS,
    NOT_NUMBERS,
    OUT_OF_RANGE_OR_REPEATED,
    WRONG_SHAPE,
    assert_message,
    case_ids,
    heart_csv_with,
    json_rows,
    uci_with,
)

HEART_CSV = PROJECT_ROOT / "data" / "heart.csv"
CLEVELAND = PROJECT_ROOT / "data" / "uci" / "processed.cleveland.data"
JOIN_KEYS = ["age", "sex", "trestbps", "chol", "thalach", "oldpeak", "fbs", "exang"]


@pytest.fixture(scope="module")
def csv_dataset():
    return load_bytes(HEART_CSV.read_bytes())


@pytest.fixture(scope="module")
def uci_dataset():
    return load_bytes(CLEVELAND.read_bytes())


def test_duplicates_are_removed_before_any_split(csv_dataset):
    assert csv_dataset.rows_raw == 1025
    assert csv_dataset.rows_distinct == 302
    assert not csv_dataset.frame.duplicated().any()
    assert csv_dataset.fingerprint["duplicates_removed"] == 723


def test_fingerprint_is_the_files_sha256(csv_dataset):
    assert csv_dataset.sha256 == (
        "ea77cdebac756ab984173c29107ccf4848577fffb77b5848a65e0426d473589b"
    )


def test_no_patient_is_in_both_holdout_and_training(csv_dataset):
    train, holdout = split_holdout(csv_dataset.frame, 0.2, seed=42, cv_folds=5)
    keys = list(FEATURES)
    overlap = train[keys].merge(holdout[keys], how="inner")
    assert len(overlap) == 0
    assert len(train) + len(holdout) == 302
    assert abs(holdout[LABEL].mean() - train[LABEL].mean()) < 0.05  # stratified


def test_every_csv_patient_is_a_uci_patient_with_same_features_and_diagnosis(
    csv_dataset, uci_dataset
):
    csv, uci = csv_dataset.frame, uci_dataset.frame
    assert len(uci) == 303  # the UCI file has one more patient
    joined = csv.merge(uci, on=JOIN_KEYS, suffixes=("_csv", "_uci"), validate="one_to_one")
    assert len(joined) == 302
    for column in [*(c for c in FEATURES if c not in JOIN_KEYS), LABEL]:
        left, right = joined[f"{column}_csv"], joined[f"{column}_uci"]
        same = (left == right) | (left.isna() & right.isna())
        assert same.all(), f"{column} differs on {int((~same).sum())} patients"


def test_label_is_disease_not_the_inverted_target():
    raw = pd.read_csv(HEART_CSV).drop_duplicates()
    frame, fmt, _ = parse(HEART_CSV.read_bytes())
    assert fmt == "csv"
    assert (frame[LABEL].to_numpy() == 1 - pd.read_csv(HEART_CSV)["target"].to_numpy()).all()
    # in the UCI file disease is num > 0; 138 of its 303 patients have it
    uci, fmt, _ = parse(CLEVELAND.read_bytes())
    assert fmt == "uci" and int(uci[LABEL].sum()) == 139
    assert len(raw) == 302


def test_disguised_missing_codes_become_missing(csv_dataset):
    raw = pd.read_csv(HEART_CSV).drop_duplicates()
    frame = csv_dataset.frame
    assert frame["ca"].isna().sum() == (raw["ca"] == 4).sum() > 0
    assert frame["thal"].isna().sum() == (raw["thal"] == 0).sum() > 0
    assert frame["ca"].max() <= 3 and frame["thal"].min() >= 1


def _csv_with(change) -> bytes:
    frame = pd.read_csv(HEART_CSV)
    change(frame)
    return frame.to_csv(index=False).encode()


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda f: f.drop(columns=["chol"], inplace=True), "missing column(s) chol"),
        (lambda f: f.loc.__setitem__((3, "cp"), 7), "column 'cp': rows 4 hold 7"),
        (lambda f: f.loc.__setitem__((0, "age"), 300), "column 'age': rows 1 hold 300"),
        (
            lambda f: (
                f.__setitem__("thalach", f["thalach"].astype(object))
                or f.loc.__setitem__((5, "thalach"), "high")
            ),
            "column 'thalach' must be numeric",
        ),
    ],
)
def test_invalid_data_is_reported_with_column_rows_and_allowed_values(change, expected):
    with pytest.raises(DataError) as error:
        load_bytes(_csv_with(change))
    assert expected in str(error.value)


def test_rows_to_score_keep_their_missing_codes_and_are_reported_by_position():
    rows = pd.read_csv(HEART_CSV).iloc[[10, 20, 30]]  # an index that is not 0..n-1
    checked = checked_features(rows.assign(ca=[4, 0, np.nan]))
    assert checked.shape == (3, 13) and (checked.dtypes == "float64").all()
    assert list(checked.columns) == list(FEATURES) and checked["ca"].iloc[0] == 4
    with pytest.raises(DataError, match=r"column 'restecg': rows 2 hold 3; allowed: 0, 1, 2"):
        checked_features(rows.assign(restecg=[0, 3, 1]))


def test_report_names_allowed_values():
    with pytest.raises(DataError, match=r"allowed: 0, 1, 2, 3"):
        load_bytes(_csv_with(lambda f: f.loc.__setitem__((3, "cp"), 7)))


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not a CSV|fields|column"),
        (b"hello,world\n1,2\n", "missing column"),
        (b"1,2,3\n4,5,6\n", "14 comma-separated fields"),
        (b"\xef\xbb\xbf\n\n", "the file is empty"),  # a byte order mark alone
        (b"age,sex\x00\x00\n", "NUL bytes"),
    ],
)
def test_unreadable_files_give_one_clear_error(payload, expected):
    with pytest.raises(DataError, match=expected):
        load_bytes(payload)


def test_uci_codes_outside_the_mapping_are_rejected():
    lines = CLEVELAND.read_text().splitlines()
    fields = lines[0].split(",")
    fields[2] = "9.0"  # cp 9 does not exist in UCI's codes
    lines[0] = ",".join(fields)
    with pytest.raises(DataError) as error:
        load_bytes("\n".join(lines).encode())
    assert_message(str(error.value), ["column 'cp' (field 3)", "rows 1 hold 9", "1, 2, 3, 4"])


def test_synthetic_data_is_seeded_and_valid():
    first, second = synthetic_csv(seed=7), synthetic_csv(seed=7)
    assert first == second != synthetic_csv(seed=8)
    dataset = load_bytes(first)
    SCHEMA.validate(dataset.frame)
    assert set(dataset.frame[LABEL].unique()) == {0.0, 1.0}


def test_feature_table_matches_the_data_files(csv_dataset):
    assert [s.name for s in FEATURE_SPECS] == list(pd.read_csv(HEART_CSV).columns[:-1])
    for spec in FEATURE_SPECS:
        values = csv_dataset.frame[spec.name].dropna()
        if spec.codes:
            assert set(values.unique()) <= set(map(float, spec.codes)), spec.name
        else:
            assert values.between(spec.low, spec.high).all(), spec.name


def test_project_does_not_read_outside_its_tree():
    for path in Path(PROJECT_ROOT / "src").rglob("*.py"):
        assert "../shared" not in path.read_text(), path
    assert np.isfinite(pd.read_csv(HEART_CSV).select_dtypes("number").to_numpy()).all()


def _heart_with_extra_columns(kind: str) -> bytes:
    """heart.csv with columns the model does not use, as users save it."""
    frame = pd.read_csv(HEART_CSV)
    if kind == "pandas index":  # pandas' default to_csv: an unnamed index column first
        return frame.to_csv().encode()
    if kind == "record id":  # every row unique through a numeric id
        return (
            frame.assign(record_id=range(10_000, 10_000 + len(frame))).to_csv(index=False).encode()
        )
    # text columns: a site name and free-text notes, different on every row
    frame.insert(0, "site", "Cleveland")
    frame["note"] = [f"visit {i}" for i in range(len(frame))]
    return frame.to_csv(index=False).encode()


@pytest.mark.parametrize(
    "kind, ignored",
    [
        ("pandas index", ["Unnamed: 0"]),
        ("record id", ["record_id"]),
        ("text columns", ["site", "note"]),
    ],
)
def test_columns_the_model_does_not_use_are_named_ignored_and_never_hide_duplicates(
    kind, ignored, csv_dataset
):
    dataset = load_bytes(_heart_with_extra_columns(kind))
    assert dataset.ignored_columns == tuple(ignored)
    assert dataset.fingerprint["ignored_columns"] == ignored
    assert dataset.rows_raw == 1025 and dataset.rows_distinct == 302
    assert dataset.fingerprint["duplicates_removed"] == 723
    assert list(dataset.frame.columns) == [*FEATURES, LABEL]
    pd.testing.assert_frame_equal(dataset.frame, csv_dataset.frame)


CLEVELAND_TEXT = CLEVELAND.read_text()


def _uci_with_every(column: int, value: str) -> bytes:
    """The Cleveland file with one field set to `value` on every line."""
    lines = []
    for line in CLEVELAND_TEXT.splitlines():
        fields = line.split(",")
        fields[column] = value
        lines.append(",".join(fields))
    return "\n".join(lines).encode()


def _heart(change) -> pd.DataFrame:
    frame = pd.read_csv(HEART_CSV).drop_duplicates()
    change(frame)
    return frame


@pytest.mark.parametrize(
    "raw, column",
    [
        (_uci_with_every(4, "0"), "chol"),  # as in one of the UCI hospitals: 0 = not measured
        (_uci_with_every(11, "?"), "ca"),
        (_heart(lambda f: f.__setitem__("ca", 4)).to_csv(index=False).encode(), "ca"),
        (_heart(lambda f: f.__setitem__("thal", None)).to_csv(index=False).encode(), "thal"),
    ],
)
def test_a_feature_missing_in_every_row_stops_before_training_naming_it(raw, column):
    frame = load_bytes(raw).frame
    with pytest.raises(DataError, match=f"column\\(s\\) '{column}' hold no value in any row"):
        split_holdout(frame, 0.2, seed=42, cv_folds=5)


def test_a_feature_missing_in_every_training_row_is_named():
    frame = load_bytes(HEART_CSV.read_bytes()).frame
    frame.loc[frame.index[5:], "oldpeak"] = np.nan  # a value in 5 rows only
    holdout_rows = frame.index[:5]
    frame = pd.concat([frame.loc[holdout_rows], frame.drop(holdout_rows)])
    # the seeded split of this frame puts all 5 rows with oldpeak in the holdout or not:
    # whichever part lacks them is what the message must name, never a crash later
    try:
        train, _ = split_holdout(frame, 0.2, seed=42, cv_folds=5)
    except DataError as exc:
        assert "'oldpeak' hold no value in any row of the training part" in str(exc)
    else:
        assert train["oldpeak"].notna().any()


def _rows_of_each_class(disease: int, healthy: int) -> pd.DataFrame:
    frame = load_bytes(HEART_CSV.read_bytes()).frame
    return pd.concat(
        [frame[frame[LABEL] == 1].head(disease), frame[frame[LABEL] == 0].head(healthy)],
        ignore_index=True,
    )


@pytest.mark.parametrize(
    "disease, healthy, folds, found, needed",
    [
        (3, 21, 5, "disease 3, no disease 21", 8),  # passes the 20-row check
        (7, 7, 5, "disease 7, no disease 7", 8),
        (40, 4, 3, "disease 40, no disease 4", 5),
    ],
)
def test_too_few_rows_of_a_class_for_holdout_and_folds_names_counts_and_minimum(
    disease, healthy, folds, found, needed
):
    frame = _rows_of_each_class(disease, healthy)
    with pytest.raises(DataError) as raised:
        split_holdout(frame, 0.2, seed=42, cv_folds=folds)
    message = str(raised.value)
    assert found in message and f"at least {needed}" in message
    assert f"{folds}-fold CV" in message and "20% holdout" in message


def test_the_minimum_per_class_is_enough_for_the_split_and_the_folds():
    for fraction, folds in [(0.2, 5), (0.2, 3), (0.3, 10), (0.1, 2)]:
        needed = min_rows_per_class(fraction, folds)
        for disease, healthy in [(needed, needed), (needed, 120)]:
            for seed in range(5):
                frame = _rows_of_each_class(disease, healthy)
                train, holdout = split_holdout(frame, fraction, seed=seed, cv_folds=folds)
                assert train[LABEL].value_counts().min() >= folds
                assert holdout[LABEL].nunique() == 2
        with pytest.raises(DataError, match=f"at least {needed}"):
            split_holdout(_rows_of_each_class(needed - 1, 120), fraction, seed=0, cv_folds=folds)


# --- input a user can get wrong: the same refusal for training and for predictions ----------

LOADERS = {"training": load_bytes, "predict": load_for_prediction}


def _refusal(path: str, raw: bytes) -> str:
    with pytest.raises(DataError) as error:
        LOADERS[path](raw)
    return str(error.value)


@pytest.mark.parametrize("path", LOADERS)
@pytest.mark.parametrize(
    "name, raw, expected",
    NOT_NUMBERS + JSON_NOT_NUMBERS,
    ids=case_ids(NOT_NUMBERS + JSON_NOT_NUMBERS),
)
def test_a_value_that_is_not_a_number_is_refused_never_read_as_missing(path, name, raw, expected):
    assert_message(_refusal(path, raw), expected)


@pytest.mark.parametrize("path", LOADERS)
@pytest.mark.parametrize(
    "name, raw, expected", OUT_OF_RANGE_OR_REPEATED, ids=case_ids(OUT_OF_RANGE_OR_REPEATED)
)
def test_a_number_beyond_the_float_range_or_a_repeated_key_is_refused(path, name, raw, expected):
    assert_message(_refusal(path, raw), expected)


@pytest.mark.parametrize("path", LOADERS)
@pytest.mark.parametrize("name, raw, expected", NO_ROWS, ids=case_ids(NO_ROWS))
def test_a_file_without_data_rows_is_refused(path, name, raw, expected):
    assert_message(_refusal(path, raw), expected)


@pytest.mark.parametrize("path", LOADERS)
@pytest.mark.parametrize("name, raw, expected", WRONG_SHAPE, ids=case_ids(WRONG_SHAPE))
def test_a_file_of_another_shape_is_refused_saying_what_it_looks_like(path, name, raw, expected):
    assert_message(_refusal(path, raw), expected)


@pytest.mark.parametrize("name, raw, expected", NO_LABEL, ids=case_ids(NO_LABEL))
def test_a_missing_label_is_named_as_the_file_names_it(name, raw, expected):
    message = _refusal("training", raw)
    assert_message(message, expected)
    assert LABEL not in message
    load_for_prediction(raw)  # predictions do not read the label


@pytest.mark.parametrize(
    "raw, unchanged, row, column",
    [
        (heart_csv_with((2, "chol", "")), heart_csv_with(), 2, "chol"),  # an empty cell
        (heart_csv_with((3, "ca", "4")), heart_csv_with(), 3, "ca"),  # a documented code
        (uci_with((2, "thal", "?")), uci_with(), 2, "thal"),  # UCI: also its own marker
        (uci_with((4, "ca", " ")), uci_with(), 4, "ca"),  # UCI: an empty cell
        (json_rows((1, "slope", None)), json_rows(), 1, "slope"),  # JSON: null
    ],
    ids=["csv empty", "csv code", "uci ?", "uci empty", "json null"],
)
def test_missing_is_one_rule_per_format_on_every_path(raw, unchanged, row, column):
    training = mark_missing(parse(raw)[0])  # the steps of load_bytes before validation
    _, predict = load_for_prediction(raw)
    for features, before in (
        (training, mark_missing(parse(unchanged)[0])),
        (predict, load_for_prediction(unchanged)[1]),
    ):
        assert np.isnan(features.loc[row - 1, column])
        assert features[column].isna().sum() == before[column].isna().sum() + 1


def test_predict_reads_what_training_reads_and_keeps_the_rows_as_written():
    raw = HEART_CSV.read_bytes()
    rows, features = load_for_prediction(raw)
    assert list(rows.columns) == pd.read_csv(HEART_CSV).columns.tolist()
    assert rows.loc[1, "oldpeak"] == "3.1" and rows.loc[0, "target"] == "0"
    training = load_bytes(raw).frame
    distinct = features.drop_duplicates(ignore_index=True)
    pd.testing.assert_frame_equal(distinct, training.loc[:, list(FEATURES)])
    # the label is optional, in a file with a header and in JSON rows
    without_label = pd.read_csv(HEART_CSV).drop(columns="target").to_csv(index=False).encode()
    pd.testing.assert_frame_equal(load_for_prediction(without_label)[1], features)
    json_features = load_for_prediction(json_rows(rows=5))[1]
    pd.testing.assert_frame_equal(json_features, features.head(5))


def test_json_rows_as_pandas_writes_them_and_rows_that_differ():
    frame = pd.read_csv(HEART_CSV).head(4)
    _, by_columns = load_for_prediction(frame.to_json().encode())  # pandas' default orient
    _, by_records = load_for_prediction(frame.to_json(orient="records").encode())
    pd.testing.assert_frame_equal(by_columns, by_records)
    lacking = json_rows().replace(b', "chol": 174.0', b"", 1)
    message = _refusal("predict", lacking)
    assert_message(message, ["JSON row 3", "lacks chol", "null where a value is missing"])
    assert_message(_refusal("predict", b"[[63, 1]]"), ["a list of objects"])
    assert_message(_refusal("predict", b"[{"), ["not valid JSON"])


def test_a_header_naming_a_column_twice_is_refused():
    raw = HEART_CSV.read_bytes().replace(b",target\n", b",age\n", 1)
    assert_message(_refusal("training", raw), ["names column(s) age more than once"])


# What UCI's codes mean (the UCI data set's documentation), by UCI code: data/README.md
UCI_MEANINGS = {
    "cp": {1: "typical angina", 2: "atypical angina", 3: "non-anginal pain", 4: "asymptomatic"},
    "restecg": {0: "normal", 1: "ST-T wave abnormality", 2: "left ventricular hypertrophy"},
    "slope": {1: "upsloping", 2: "flat", 3: "downsloping"},
    "thal": {3: "normal", 6: "fixed defect", 7: "reversible defect"},
}


def test_code_labels_are_the_uci_meanings_carried_over_by_the_recoding():
    for name, meanings in UCI_MEANINGS.items():
        labels = dict(SPEC_BY_NAME[name].labelled_codes)
        assert {UCI_RECODE[name][uci]: meaning for uci, meaning in meanings.items()} == labels
    assert dict(SPEC_BY_NAME["sex"].labelled_codes) == {0: "female", 1: "male"}
    assert all(spec.code_labels for spec in FEATURE_SPECS if spec.categorical)
    assert "3 = typical angina" in SPEC_BY_NAME["cp"].meaning
