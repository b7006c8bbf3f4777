"""Request bodies of the prediction routes: read the raw JSON bytes within the limits, then
parse and validate them into one float64 matrix.

`parse_rows` decodes a body with msgspec (typed, strict: booleans and strings are not numbers,
NaN and out-of-range numbers refused) straight into the matrix and checks every value against
the feature table at once (schemas.allowed_values). A body it does not accept goes through
`parse` (pydantic-core, schemas.py), which accepts exactly the valid bodies and names each
problem: both paths give the same matrix for a valid body and the same 422 for an invalid one.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
from fastapi import Request
from pydantic import TypeAdapter, ValidationError

from heart_mlops.api import schemas
from heart_mlops.api.errors import ApiError
from heart_mlops.data import FEATURES

_ROW = dict[str, list[float] | dict[str, float | None]]  # {"features": [...]} | {"patient": {}}
_ONE_ROW = msgspec.json.Decoder(_ROW)
_ROWS = msgspec.json.Decoder(dict[str, list[_ROW]])
_FEATURE_NAMES = frozenset(FEATURES)

JSON = "application/json"


async def read_json(request: Request, max_bytes: int) -> bytes:
    """The raw body of a JSON request, at most `max_bytes` bytes, read as it streams in.

    Raises ApiError 415 unless the Content-Type is application/json or `*/*+json` (parameters
    such as charset allowed), 413 when the declared Content-Length or the bytes read exceed
    `max_bytes`.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != JSON and not media.endswith("+json"):
        raise ApiError(415, f"Content-Type must be {JSON}, got '{media or 'none'}'")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(
            413,
            f"the body has {declared} bytes; at most {max_bytes} allowed "
            "(HEART_MLOPS_API_MAX_BODY_BYTES)",
        )
    body, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(
                413, f"the body exceeds {max_bytes} bytes (HEART_MLOPS_API_MAX_BODY_BYTES)"
            )
        body.append(chunk)
    return b"".join(body)


def parse(adapter: TypeAdapter, body: bytes, *, max_rows: int) -> Any:
    """`body` (JSON bytes) validated by `adapter` into its type.

    Raises ApiError 422 naming each field, value and what is allowed (at most
    schemas.MAX_ERRORS_SHOWN errors), also for a number beyond the float range (as for any
    other non-finite number) and a key repeated in one object (JSON leaves its meaning open);
    `max_rows` is the batch limit quoted in its messages.
    """
    try:
        value = adapter.validate_json(body)
    except ValidationError as exc:
        errors = schemas.describe_errors(_with_out_of_range(adapter, body, exc), max_rows=max_rows)
        raise ApiError(422, schemas.summary(errors), errors) from None
    if body.count(b'"') > 2 * schemas.key_count(value):  # costs no parse on the hot path
        _refuse_repeated_key(body)
    return value


def parse_rows(body: bytes, *, batch: bool, max_rows: int) -> np.ndarray:
    """`body` (JSON bytes) of /predict (`batch` False: one row in either shape) or
    /predict/batch (`{"instances": [1 to max_rows rows]}`) -> float64 matrix (n, 13) in
    FEATURES order, NaN where missing.

    Raises ApiError 422 as `parse` does."""
    matrix = _decoded_rows(body, batch, max_rows)
    if matrix is not None:
        return matrix
    if batch:
        value = parse(schemas.batch_request(max_rows), body, max_rows=max_rows)
        return schemas.feature_matrix(value.instances)
    value = parse(schemas.PREDICT_REQUEST, body, max_rows=max_rows)
    return np.array([schemas.feature_row(value)], dtype=np.float64)


def _decoded_rows(body: bytes, batch: bool, max_rows: int) -> np.ndarray | None:
    """The matrix of a valid body in the common forms, or None for `parse` to decide."""
    try:
        decoded = (_ROWS if batch else _ONE_ROW).decode(body)
    except msgspec.DecodeError:
        return None
    if batch:
        items = decoded.get("instances")
        if len(decoded) != 1 or items is None or not 1 <= len(items) <= max_rows:
            return None
    else:
        items = [decoded]
    matrix = np.empty((len(items), len(FEATURES)))
    keys = 1 if batch else 0  # object keys a body with no repeated key holds
    for index, item in enumerate(items):
        values = item.get("features")
        if len(item) == 1 and isinstance(values, list) and len(values) == len(FEATURES):
            matrix[index], keys = values, keys + 1
            continue
        record = item.get("patient")
        if len(item) != 1 or not isinstance(record, dict) or record.keys() != _FEATURE_NAMES:
            return None
        matrix[index] = [math.nan if (v := record[name]) is None else v for name in FEATURES]
        keys += 1 + len(FEATURES)
    # values are numbers or null, so quotes delimit keys only: more means a repeated key
    if body.count(b'"') != 2 * keys or not schemas.allowed_values(matrix).all():
        return None
    return matrix


def _with_out_of_range(adapter: TypeAdapter, body: bytes, exc: ValidationError) -> ValidationError:
    """The parser stops at a number beyond the float range ("number out of range", no field):
    read such numbers as infinite instead, so validation names each one's field."""
    first = exc.errors(include_url=False)[0]
    if first["type"] != "json_invalid" or "out of range" not in first["msg"]:
        return exc
    try:
        adapter.validate_python(json.loads(body, parse_int=float))
    except ValidationError as named:
        return named
    except ValueError:  # not JSON after all
        pass
    return exc


def _refuse_repeated_key(body: bytes) -> None:
    """Raise ApiError 422 naming the first key that `body` repeats within one object, if any."""

    def unique(pairs: list[tuple[str, Any]]) -> dict:
        keys = [key for key, _ in pairs]
        repeated = next((key for key in keys if keys.count(key) > 1), None)
        if repeated is not None:
            error = {
                "field": repeated,
                "value": None,
                "message": f"the key '{repeated}' appears more than once in one object; "
                "give each field once",
            }
            raise ApiError(422, f"{repeated}: {error['message']}", [error])
        return dict(pairs)

    json.loads(body, object_pairs_hook=unique)
