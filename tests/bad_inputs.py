"""Data files a user can get wrong, by kind, shared by the data, pipeline and CLI tests.

Each case is (name, file content, fragments the one error message must hold): the column,
the row(s), the value and what is allowed, or what the file looks like and what was expected.
Rows are data rows, 1-based; lines are the file's lines.
"""

from __future__ import annotations

import json

from tests.support import ROOT

HEART_CSV = ROOT / "data" / "heart.csv"
CLEVELAND = ROOT / "data" / "uci" / "processed.cleveland.data"
HEADER = HEART_CSV.read_text().splitlines()[0]
UCI_FIELDS = [*HEADER.split(",")[:-1], "num"]


def _with_cells(lines: list[str], names: list[str], first_row: int, cells) -> bytes:
    for row, column, text in cells:
        fields = lines[first_row + row - 1].split(",")
        fields[names.index(column)] = text
        lines[first_row + row - 1] = ",".join(fields)
    return ("\n".join(lines) + "\n").encode()


def heart_csv_with(*cells: tuple[int, str, str], line_before: tuple[int, str] | None = None):
    """heart.csv with each (data row, column, text as written in the file) put in, and a
    line (data row, text) inserted before that row."""
    lines = HEART_CSV.read_text().splitlines()
    if line_before:
        lines.insert(line_before[0], line_before[1])
    return _with_cells(lines, HEADER.split(","), 1, cells)


def uci_with(*cells: tuple[int, str, str]) -> bytes:
    """The Cleveland UCI file with each (row, column, text as written in the file) put in."""
    return _with_cells(CLEVELAND.read_text().splitlines(), UCI_FIELDS, 0, cells)


def json_rows(*cells: tuple[int, str, object], rows: int = 5) -> bytes:
    """The first `rows` rows of heart.csv as JSON objects, with each (row, column, value)."""
    names = HEADER.split(",")
    records = [
        {name: float(value) for name, value in zip(names, line.split(","), strict=True)}
        for line in HEART_CSV.read_text().splitlines()[1 : rows + 1]
    ]
    for row, column, value in cells:
        records[row - 1][column] = value
    return json.dumps(records).encode()


def _lines(path, change) -> bytes:
    """The file at `path` with `change` applied to each line."""
    return ("\n".join(change(line) for line in path.read_text().splitlines()) + "\n").encode()


# Text where a number belongs: never read as a missing value. What is missing is, for a
# heart.csv-style file, an empty cell; for a UCI file, an empty cell or `?`; for JSON, null.
NOT_NUMBERS = [
    (
        "male in sex",
        heart_csv_with((3, "sex", "male")),
        ["column 'sex'", "rows 3 hold 'male'", "allowed: 0, 1", "an empty cell"],
    ),
    (
        "a quoted decimal comma in oldpeak",
        heart_csv_with((2, "oldpeak", '"2,3"')),
        ["column 'oldpeak'", "rows 2 hold '2,3'", "allowed: -5 to 10", "decimal takes a point"],
    ),
    (
        "? in ca of a heart.csv-style file",
        heart_csv_with((5, "ca", "?")),
        ["column 'ca'", "rows 5 hold '?'", "allowed: 0, 1, 2, 3", "an empty cell"],
    ),
    (
        "NA in chol and nan in thalach",
        heart_csv_with((1, "chol", "NA"), (4, "chol", "NA"), (7, "thalach", "nan")),
        ["column 'chol'", "rows 1, 4 hold 'NA';", "column 'thalach'", "rows 7 hold 'nan'"],
    ),
    (
        "brackets in cp, as a CLI prints them",
        heart_csv_with((6, "cp", "[/b]"), (8, "cp", "[1]")),
        ["column 'cp'", "rows 6, 8 hold '[/b]', '[1]'", "allowed: 0, 1, 2, 3"],
    ),
    (
        "yes in exang of a UCI file",
        uci_with((2, "exang", "yes")),
        ["column 'exang' (field 9)", "rows 2 hold 'yes'", "allowed: 0, 1", "an empty cell or ?"],
    ),
]
# JSON rows: booleans and strings are not numbers (as for the API); null is missing
JSON_NOT_NUMBERS = [
    (
        "true in fbs and false in exang",
        json_rows((2, "fbs", True), (4, "exang", False)),
        ["column 'fbs'", "rows 2 hold true", "column 'exang'", "rows 4 hold false", "null"],
    ),
    (
        "a number as a string",
        json_rows((1, "age", "63")),
        ["column 'age'", 'rows 1 hold "63"', "allowed: 1 to 120", "null"],
    ),
    (
        "NaN, not null",
        json_rows().replace(b'"age": 52.0', b'"age": NaN', 1),
        ["column 'age'", 'rows 1 hold "NaN"', "allowed: 1 to 120"],
    ),
]
# Numbers beyond the float range are out of range (refused by the feature table), not "not
# numbers" nor invalid JSON; a JSON key given twice in a row is refused, not last-one-wins
HUGE = "9" * 5000  # past Python's 4300-digit limit of integer text
OUT_OF_RANGE_OR_REPEATED = [
    (
        "5000 digits in age of a heart.csv-style file",
        heart_csv_with((2, "age", HUGE)),
        ["column 'age'", "rows 2 hold inf", "allowed: 1 to 120"],
    ),
    (
        "-1e999 in oldpeak of a UCI file",
        uci_with((3, "oldpeak", "-1e999")),
        ["column 'oldpeak'", "rows 3 hold -inf", "allowed: -5 to 10"],
    ),
    (
        "1e999 and 5000 digits in JSON rows",
        json_rows()
        .replace(b'"chol": 212.0', f'"chol": {HUGE}'.encode(), 1)
        .replace(b'"thalach": 125.0', b'"thalach": 1e999', 1),
        ["column 'chol'", "rows 1 hold inf", "column 'thalach'", "rows 3 hold inf"],
    ),
    (
        "age twice in a JSON row",
        json_rows().replace(b'{"age": 52.0', b'{"age": 52.0, "age": 25.0', 1),
        ["names 'age' 2 times", "values 52.0, 25.0", "each field once"],
    ),
]
# A label that is missing: named as the file names it (not the pipeline's `disease`)
NO_LABEL = [
    (
        "a line of only commas",
        heart_csv_with(line_before=(3, "," * 13)),
        ["column 'target'", "rows 3 hold no value", "allowed: 0, 1 (the label, never missing)"],
    ),
    (
        "? as the label of a UCI file",
        uci_with((4, "num", "?")),
        ["column 'num' (field 14)", "rows 4 hold no value", "allowed: 0, 1, 2, 3, 4"],
    ),
    (
        "null as the label of JSON rows",
        json_rows((2, "target", None), rows=40),
        ["column 'target'", "rows 2 hold no value", "allowed: 0, 1"],
    ),
]
# No rows to learn from or predict on
NO_ROWS = [
    ("an empty file", b"", ["the file is empty"]),
    ("blank lines only", b"\n  \n\n", ["the file is empty"]),
    ("a header only", f"{HEADER}\n".encode(), ["no data rows", "a header line"]),
    ("a header and blank lines", f"{HEADER}\n\n\n".encode(), ["no data rows", "a header line"]),
    ("an empty JSON list", b"[]", ["no data rows", "JSON"]),
]
# Files of another shape than the two formats: the separator, fields per line, the format
WRONG_SHAPE = [
    (
        "';' between fields and decimal commas",
        _lines(HEART_CSV, lambda line: line.replace(",", ";").replace(".", ",")),
        ["separated by ';' and decimal commas", "14 fields at ';'", "expected ','", "'.'"],
    ),
    (
        "tabs between fields",
        _lines(HEART_CSV, lambda line: line.replace(",", "\t")),
        ["separated by '\\t'", "14 fields at '\\t', 1 at ','", "expected ','"],
    ),
    (
        "a UCI file with a site name last",
        _lines(CLEVELAND, lambda line: line + ",Cleveland"),
        [
            "format detected: a UCI processed.*.data file",
            "line 1 has 15 fields",
            "expected 14",
            "field 15 holds text 'Cleveland'",
            "needs a header line",
        ],
    ),
    (
        "a UCI file with a site name first",
        _lines(CLEVELAND, lambda line: "Hungary," + line),
        ["format detected: a UCI", "15 fields", "expected 14", "field 1 holds text 'Hungary'"],
    ),
    (
        "a heart.csv-style line with a field too many",
        heart_csv_with((3, "target", "1,0")),
        ["format detected: a heart.csv-style file", "line 4 has 15 fields", "needs 14"],
    ),
]


def case_ids(cases) -> list[str]:
    """The names of `cases`, as pytest ids."""
    return [name for name, _, _ in cases]


def assert_message(message: str, expected: list[str]) -> None:
    """Every fragment is in the message, and it is one message, not a traceback."""
    missing = [fragment for fragment in expected if fragment not in message]
    assert not missing, f"{missing} not in: {message}"
    assert "Traceback" not in message
