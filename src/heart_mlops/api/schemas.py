"""Request and response bodies. Allowed values come from `data.FEATURE_SPECS`, the one table.

Bodies are parsed and validated in one pass from the raw JSON bytes (pydantic-core), strictly:
booleans and strings are not numbers, NaN and Infinity are refused. Validation errors become
messages that name the field or position, the value and what is allowed.
"""

from __future__ import annotations

import datetime
import functools
import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

from heart_mlops.data import FEATURE_SPECS, FEATURES, SPEC_BY_NAME, FeatureSpec
from heart_mlops.model_card import INTENDED_USE, LIMITATIONS

SEED_EXAMPLE = [63, 1, 3, 145, 233, 1, 0, 150, 0, 2.3, 0, 0, 1]
FEATURES_EXAMPLE = {"features": SEED_EXAMPLE}
PATIENT_EXAMPLE = {
    "patient": {
        **dict(zip(FEATURES, SEED_EXAMPLE, strict=True)),
        "chol": None,
        "slope": None,
        "ca": None,
        "thal": None,
    }
}
MAX_ERRORS_SHOWN = 20
LABELS = {0: "no heart disease", 1: "heart disease"}


def _feature_table() -> tuple[np.ndarray, ...]:
    """FEATURE_SPECS as arrays over the 13 columns: low, high, missing code (NaN: none) and the
    allowed codes (NaN-padded rows; all NaN for a numeric feature)."""
    width = max(len(spec.codes or ()) for spec in FEATURE_SPECS)
    codes = np.full((len(FEATURE_SPECS), width), np.nan)
    low, high = np.full(len(FEATURE_SPECS), -np.inf), np.full(len(FEATURE_SPECS), np.inf)
    for i, spec in enumerate(FEATURE_SPECS):
        if spec.codes:
            codes[i, : len(spec.codes)] = spec.codes
        else:
            low[i], high[i] = spec.low, spec.high
    missing = np.array(
        [np.nan if s.missing_code is None else s.missing_code for s in FEATURE_SPECS]
    )
    has_codes = ~np.isnan(codes).all(axis=1)
    return low, high, missing, codes, has_codes


_LOW, _HIGH, _MISSING_CODE, _CODES, _HAS_CODES = _feature_table()


def allowed_values(matrix: np.ndarray) -> np.ndarray:
    """Which values of `matrix` (n, 13), FEATURES order, the feature table allows: bool (n, 13).
    A value is allowed when it is its feature's missing code, one of its codes, or a number in
    its [low, high]; NaN (missing, null in the body) counts as allowed. The one statement of the
    rule: the pydantic validators and `body.parse_rows` both use it."""
    in_range = (matrix >= _LOW) & (matrix <= _HIGH)
    is_code = (matrix[:, :, None] == _CODES).any(axis=2) | ~_HAS_CODES
    return (in_range & is_code) | (matrix == _MISSING_CODE) | np.isnan(matrix)


def _allowed_value(spec: FeatureSpec):
    column = FEATURES.index(spec.name)

    def check(value: float) -> float:
        row = np.zeros((1, len(FEATURES)))  # other columns irrelevant: only ours is read
        row[0, column] = value
        if math.isnan(value) or not allowed_values(row)[0, column]:
            raise PydanticCustomError(
                "feature_value",
                "{value} is not allowed; allowed: {allowed}",
                {"value": value, "allowed": spec.allowed},
            )
        return value

    return check


def _json_schema(spec: FeatureSpec, nullable: bool) -> dict:
    if spec.codes:
        codes = [*spec.codes, *([int(spec.missing_code)] if spec.missing_code is not None else [])]
        schema: dict[str, Any] = {"type": "number", "enum": sorted(codes)}
    else:
        schema = {"type": "number", "minimum": spec.low, "maximum": spec.high}
        if spec.missing_code is not None:
            schema = {"anyOf": [schema, {"type": "number", "enum": [spec.missing_code]}]}
    options = [schema, {"type": "null"}] if nullable else [schema]
    described = {
        "description": f"{spec.meaning}; allowed: {spec.allowed}"
        + ("; null = missing" if nullable else "")
    }
    if len(options) == 1:
        return {**schema, **described}
    return {"anyOf": options, **described}


def feature_type(spec: FeatureSpec, *, nullable: bool):
    """The annotated type of one feature's value: a strict finite number allowed by `spec`
    (or None when `nullable`), with its JSON schema."""
    number = Annotated[float, Strict(), AllowInfNan(False), AfterValidator(_allowed_value(spec))]
    if nullable:
        return Annotated[number | None, WithJsonSchema(_json_schema(spec, True))]
    return Annotated[number, WithJsonSchema(_json_schema(spec, False))]


FeatureValues = tuple[tuple(feature_type(spec, nullable=False) for spec in FEATURE_SPECS)]


class FeaturesInput(BaseModel):
    """Existing clients' shape: the 13 values in heart.csv order and codes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": FEATURES_EXAMPLE})
    features: FeatureValues = Field(  # type: ignore[valid-type]
        description="age, sex, cp, trestbps, chol, fbs, restecg, thalach, exang, oldpeak, "
        "slope, ca, thal; heart.csv codes, where ca 4, thal 0 and chol or trestbps 0 "
        "mean missing"
    )


PatientRecord = create_model(
    "PatientRecord",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Every feature by name; null (or the missing code) when not recorded.",
    **{spec.name: (feature_type(spec, nullable=True), ...) for spec in FEATURE_SPECS},
)


class PatientInput(BaseModel):
    """Named shape: every feature by name, null when the record lacks it (imputed)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": PATIENT_EXAMPLE})
    patient: PatientRecord  # type: ignore[valid-type]


def _shape_of(body: Any) -> str | None:
    if isinstance(body, dict):
        if "features" in body:
            return "features"
        if "patient" in body:
            return "patient"
    elif isinstance(body, FeaturesInput | PatientInput):
        return "features" if isinstance(body, FeaturesInput) else "patient"
    return None


PredictRequest = Annotated[
    Annotated[FeaturesInput, Tag("features")] | Annotated[PatientInput, Tag("patient")],
    Discriminator(
        _shape_of,
        custom_error_type="body_shape",
        custom_error_message="needs an object with 'features' (13 numbers) or "
        "'patient' (the features by name)",
    ),
]
PREDICT_REQUEST = TypeAdapter(PredictRequest)


def batch_request_model(max_rows: int) -> type[BaseModel]:
    """The BatchRequest model: `{"instances": [1 to max_rows rows, each in either shape]}`."""
    return create_model(
        "BatchRequest",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra={"example": {"instances": [FEATURES_EXAMPLE, PATIENT_EXAMPLE]}},
        ),
        instances=(
            list[PredictRequest],
            Field(
                min_length=1, max_length=max_rows, description=f"1 to {max_rows} rows, either shape"
            ),
        ),
    )


@functools.cache
def batch_request(max_rows: int) -> TypeAdapter:
    """The TypeAdapter of `batch_request_model(max_rows)`, built once per limit."""
    return TypeAdapter(batch_request_model(max_rows))


def feature_row(item: FeaturesInput | PatientInput) -> list[float]:
    """The 13 values in FEATURES order, NaN where missing."""
    if isinstance(item, FeaturesInput):
        return list(item.features)
    record = item.patient
    return [math.nan if (v := getattr(record, name)) is None else v for name in FEATURES]


def key_count(value: FeaturesInput | PatientInput | BaseModel) -> int:
    """How many object keys a JSON body that validated into `value` (a request of either shape,
    or a batch) holds when none is repeated: 1 per features row, 14 per patient row, 1 for
    `instances`. A valid body's values are numbers or null, so its quotes delimit keys only:
    more than twice this many quotes means a repeated key."""
    if isinstance(value, FeaturesInput):
        return 1
    if isinstance(value, PatientInput):
        return 1 + len(FEATURES)
    return 1 + sum(key_count(item) for item in value.instances)


def feature_matrix(items) -> np.ndarray:
    """Rows of either shape -> float array of shape (len(items), 13), NaN where missing."""
    return np.array([feature_row(item) for item in items], dtype=float).reshape(-1, len(FEATURES))


# --- validation errors as messages ------------------------------------------------------------


def _without_shape_tags(loc: tuple) -> tuple:
    """pydantic puts the union tag ('features' or 'patient') before the fields of a row."""
    return tuple(
        part
        for i, part in enumerate(loc)
        if not (
            part in ("features", "patient")
            and i + 1 < len(loc)
            and (i == 0 or isinstance(loc[i - 1], int))
        )
    )


def _field_name(loc: tuple) -> str:
    """('instances', 3, 'features', 11) -> 'instances[3].features[11] (ca)'."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    if (
        len(loc) >= 2
        and loc[-2] == "features"
        and isinstance(loc[-1], int)
        and (0 <= loc[-1] < len(FEATURES))
    ):
        text += f" ({FEATURES[loc[-1]]})"
    return text or "body"


def _feature_of(loc: tuple) -> FeatureSpec | None:
    if loc and isinstance(loc[-1], str):
        return SPEC_BY_NAME.get(loc[-1]) if "patient" in loc else None
    if len(loc) >= 2 and loc[-2] == "features" and 0 <= loc[-1] < len(FEATURES):
        return FEATURE_SPECS[loc[-1]]
    return None


def _shown(value: Any) -> Any:
    """The offending value, JSON-safe and short."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**16:
        value = float(value) if abs(value) < 10**308 else (math.inf if value > 0 else -math.inf)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str | bytes) and len(value) > 80:
        return value[:80] + "..."
    if isinstance(value, dict | list) and len(str(value)) > 200:
        return f"{type(value).__name__} of {len(value)} items"
    return value


def _message(error: dict, kind: str, loc: tuple, spec: FeatureSpec | None, max_rows: int) -> str:
    """The message of one validation error, by its kind and where it is."""
    value = error.get("input")
    if kind == "json_invalid":
        return f"the body is not valid JSON: {error['ctx']['error']}"
    if kind in ("too_long", "too_short") and loc and loc[-1] == "features":
        count = (
            len(value)
            if isinstance(value, list | tuple)
            else error.get("ctx", {}).get("actual_length", "?")
        )
        return f"expected {len(FEATURES)} values in the order {', '.join(FEATURES)}; got {count}"
    if kind in ("tuple_type", "list_type") and loc and loc[-1] == "features":
        return f"{_shown(value)!r} is not a list of {len(FEATURES)} numbers"
    if kind in ("model_type", "dict_type") and loc and loc[-1] == "patient":
        return f"{_shown(value)!r} is not an object with the features by name"
    if kind in ("too_long", "too_short") and loc and loc[-1] == "instances":
        return f"a batch holds 1 to {max_rows} rows; got {len(value)}"
    if kind == "extra_forbidden":
        return f"unknown field '{loc[-1]}'"
    if kind == "missing":
        hint = " (use null if not recorded)" if spec is not None else ""
        return f"required field '{loc[-1]}' is missing{hint}"
    if kind == "finite_number":
        return f"{_shown(value)} is not a finite number"
    if kind == "float_type" or kind == "none_required":
        return f"{_shown(value)!r} is not a number" + (
            " or null" if spec is not None and "patient" in loc else ""
        )
    if kind == "feature_value":
        return f"{value:g} is not allowed"
    return error["msg"]


def describe_errors(exc: ValidationError, *, max_rows: int) -> list[dict]:
    """The errors of `exc` as `{"field", "value", "message", "allowed"?}` dicts, duplicates
    dropped, at most MAX_ERRORS_SHOWN; `max_rows` is the batch limit quoted in messages."""
    described = []
    for error in exc.errors(include_url=False):
        loc = _without_shape_tags(tuple(error["loc"]))
        kind, value = error["type"], error.get("input")
        if kind == "missing" and len(loc) >= 2 and loc[-2] == "features":
            loc, kind = loc[:-1], "too_short"  # a short list: report its length once
        spec = _feature_of(loc)
        item = {
            "field": _field_name(loc),
            "value": None if kind in ("json_invalid", "missing") else _shown(value),
            "message": _message(error, kind, loc, spec, max_rows),
        }
        if spec is not None:
            item["allowed"] = spec.allowed + ("; or null" if "patient" in loc else "")
        described.append(item)
    # a pydantic union may report the same problem twice (once per nullable branch)
    unique = {(d["field"], d["message"]): d for d in described}
    return list(unique.values())[:MAX_ERRORS_SHOWN]


def summary(errors: list[dict]) -> str:
    """One line for `detail`: the first error's field, message and what is allowed, and how
    many more there are. `errors` is describe_errors' output, not empty (IndexError)."""
    first = errors[0]
    text = f"{first['field']}: {first['message']}"
    if "allowed" in first:
        text += f"; allowed: {first['allowed']}"
    return text + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")


# --- responses --------------------------------------------------------------------------------


class Contribution(BaseModel):
    """One raw feature's share of an explained prediction, in the explanation's `units`."""

    feature: str = Field(description="the feature's name (data.FEATURES)")
    value: float = Field(description="the value the model used: the imputed one when missing")
    missing: bool = Field(description="the value was missing (or a missing code) and imputed")
    contribution: float


class Explanation(BaseModel):
    """Why this prediction: `base_value` plus every contribution equals the explained model's
    output in `units` (log-odds of P(disease), or P(disease)), and that output is the served
    probability within the runtime parity tolerance."""

    method: Literal["linear", "tree_shap", "permutation_shap"] = Field(
        description="linear: exact, against the training mean; tree_shap: exact "
        "path-dependent TreeSHAP; permutation_shap: Shapley values estimated within a "
        "budget against training rows (see `detail`)"
    )
    units: Literal["log_odds", "probability"]
    base_value: float = Field(description="the output with no feature known, in `units`")
    detail: str = Field(description="the method, its reference and its budget, in words")
    contributions: list[Contribution] = Field(
        description="the 13 features, largest |contribution| first"
    )


class Prediction(BaseModel):
    """The answer for one patient: P(heart disease) and the decision at the model's threshold;
    with `explain=true`, why."""

    request_id: str = Field(
        description="this row's id, made by the server: the key of its prediction-log record "
        "and what POST /feedback names"
    )
    prediction: Literal[0, 1] = Field(
        description="1 = heart disease present (probability >= threshold), 0 = absent"
    )
    probability: float = Field(ge=0, le=1, description="P(heart disease)")
    threshold: float = Field(description="decision threshold of this model version")
    model_version: str
    label: str = Field(description="the prediction in words")
    explanation: Explanation | None = Field(
        None, description="with `explain=true`: why; null when none can be given"
    )
    explanation_unavailable: str | None = Field(
        None, description="with `explain=true` and a null explanation: the reason"
    )


class BatchPrediction(BaseModel):
    """The answers for a batch: one prediction per row, in the order of the rows sent; `count`
    rows, all from the model version `model_version`."""

    predictions: list[Prediction]
    model_version: str
    count: int


class ErrorItem(BaseModel):
    """One invalid value: its `field` (e.g. `instances[3].features[11] (ca)`), the `value` sent,
    what is wrong, and for a feature the values allowed."""

    field: str
    value: Any = None
    message: str
    allowed: str | None = None


class ErrorResponse(BaseModel):
    """The body of every error: a one-line `detail`; for invalid input (422), `errors` lists each
    problem (at most 20)."""

    detail: str
    errors: list[ErrorItem] | None = None


class Health(BaseModel):
    """Liveness: `ok` while the process serves; whether a model is loaded and its version, the
    registry's state at its last check and when (UTC, ISO 8601), the version under @champion and
    whether it is the one served, the last load or registry error."""

    status: Literal["ok"]
    model_loaded: bool
    model_version: str | None
    registry_reachable: bool | None = Field(
        description="at the last check of the registry; null before the first check"
    )
    registry_checked_at: str | None
    last_error: str | None = Field(
        description="what went wrong at the last check (registry unreachable, a load failed, "
        "@champion no longer resolves); null when it went well"
    )
    champion_version: str | None = Field(
        description="the version under @champion at the last check that reached the registry; "
        "null when no version holds the alias (or before that check)"
    )
    serving_champion: bool = Field(
        description="whether the served model is that version; false while none is loaded or "
        "the served one lost @champion (it keeps serving: see last_error)"
    )


class ModelInfo(BaseModel):
    """The served model. `alias` is null once it is no longer @champion (it keeps serving):
    `serving_champion` false, `not_champion_reason` says why."""

    model_config = ConfigDict(extra="allow")
    model_name: str
    version: str = Field(description="the served version")
    alias: Literal["champion"] | None = Field(
        description="'champion' while the served version holds @champion (at the last check "
        "that reached the registry), null once it no longer does"
    )
    serving_champion: bool
    champion_version: str | None = Field(
        description="the version under @champion at that check; null when none holds it"
    )
    not_champion_reason: str | None = Field(
        description="why the served version is not @champion (alias removed or moved to a "
        "version that failed to load, version or registered model deleted); null while it is"
    )
    run_id: str | None
    model_type: str
    candidate: str | None
    tuning_label: str | None
    runtime: str
    threshold: float
    parameters: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    data: dict[str, str | None]
    loaded_at: str
    challenger: dict[str, Any] | None = Field(
        None,
        description="the version under @challenger, scored in shadow on every answered request "
        "(version, alias, run_id, model_type, runtime, threshold, loaded_at); null when none",
    )


class FeatureCode(BaseModel):
    """One allowed code of a coded feature and what it means."""

    code: int
    label: str


class FeatureInfo(BaseModel):
    """One of the 13 features as a form asks for it (data.FEATURE_SPECS): `name` as the API's
    bodies name it, its clinical `title` and `unit`; a numeric feature has `low` to `high`, a
    coded one its `codes`. `missing_code` is heart.csv's code for "not recorded" (null says the
    same in the `patient` shape)."""

    name: str
    title: str
    unit: str | None
    note: str | None = Field(description="how to read a value, when title and unit do not say")
    low: float | None
    high: float | None
    codes: list[FeatureCode] | None
    missing_code: float | None
    categorical: bool = Field(description="one-hot encoded by the model (codes are categories)")
    allowed: str = Field(description="the values accepted, as 422 answers quote them")
    description: str


class FeatureTable(BaseModel):
    """The inputs the model takes, in the order of the `features` list, and the terms of its
    use (model_card.py: the text of every version's report)."""

    features: list[FeatureInfo]
    intended_use: str
    limitations: list[str]


def feature_table() -> dict:
    """The FeatureTable of data.FEATURE_SPECS and the model card, as a plain dict."""
    return {
        "features": [
            {
                "name": spec.name,
                "title": spec.title,
                "unit": spec.unit,
                "note": spec.note,
                "low": spec.low,
                "high": spec.high,
                "codes": [{"code": c, "label": label} for c, label in spec.labelled_codes] or None,
                "missing_code": spec.missing_code,
                "categorical": spec.categorical,
                "allowed": spec.allowed,
                "description": spec.meaning,
            }
            for spec in FEATURE_SPECS
        ],
        "intended_use": INTENDED_USE,
        "limitations": list(LIMITATIONS),
    }


class ReloadResult(BaseModel):
    """What a reload did: whether a version was loaded, the version served now and the one
    before, and a one-line detail (the error when loading failed)."""

    reloaded: bool
    model_version: str | None
    previous_version: str | None
    detail: str


class Feedback(BaseModel):
    """POST /feedback: the confirmed diagnosis of an answered row."""

    request_id: str = Field(
        min_length=1, max_length=64, description="the `request_id` of the answered row"
    )
    outcome: Literal[0, 1] = Field(description="confirmed diagnosis: 1 = heart disease, 0 = none")
    observed_at: datetime.datetime | None = Field(
        None, description="when the outcome was observed, ISO 8601 (no zone: UTC); default now"
    )
    replace: bool = Field(False, description="overwrite an outcome already recorded for this id")


class FeedbackResult(BaseModel):
    """What POST /feedback recorded."""

    request_id: str
    outcome: Literal[0, 1]
    observed_at: str = Field(description="UTC, ISO 8601")
    status: Literal["recorded", "replaced", "pending"] = Field(
        description="pending: the row is still spooled; the outcome is joined when it is written"
    )
