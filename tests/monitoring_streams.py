"""Prediction streams for the monitoring tests: rows like the holdout's, and rows shifted the
way a new clinic's patients could be (older, other chest-pain and thalassemia mixes, other
values left unrecorded). Shared by the monitor tests and the model_monitoring DAG's tests.

Each stream is a list of (13 feature values as the API takes them, in FEATURES order; the
patient's confirmed outcome 0/1). Missing values are sent as heart.csv's missing codes
(data.MISSING_CODES) where a feature has one, else null.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from heart_mlops.data import FEATURES, LABEL, MISSING_CODES
from tests.support import heart_split

Stream = list[tuple[list[float | None], int]]


def _as_requests(frame: pd.DataFrame) -> Stream:
    """Rows (FEATURES and LABEL, NaN = missing) -> the stream the API is sent."""
    rows = []
    for record in frame.to_dict("records"):
        values = []
        for name in FEATURES:
            value = record[name]
            if pd.isna(value):
                value = MISSING_CODES.get(name)
            values.append(None if value is None else float(value))
        rows.append((values, int(record[LABEL])))
    return rows


HOLDOUT_ROWS = len(heart_split()[1])  # 61 distinct patients


def holdout_stream(rows: int = HOLDOUT_ROWS, seed: int = 7) -> Stream:
    """`rows` patients of heart.csv's holdout (the pipeline's split), each at most once while
    `rows` <= HOLDOUT_ROWS: new patients of the training data's population, so nothing drifts.
    (Drawn with replacement beyond that; repeated patients make drift tests over-confident.)"""
    _, holdout = heart_split()
    return _as_requests(holdout.sample(rows, replace=rows > len(holdout), random_state=seed))


def shifted_stream(rows: int = HOLDOUT_ROWS, seed: int = 11) -> Stream:
    """`rows` holdout patients changed: 15 years older, chest pain mostly asymptomatic (cp 0),
    thalassemia mostly fixed defect (thal 1), cholesterol unrecorded in 40 %, the vessel count
    (ca) in 30 % and the resting blood pressure in 25 % of rows. Outcomes are the drawn
    patients' own."""
    rng = np.random.default_rng(seed)
    _, holdout = heart_split()
    frame = holdout.sample(rows, replace=rows > len(holdout), random_state=seed)
    frame = frame.reset_index(drop=True)
    frame["age"] = np.clip(frame["age"] + 15, 1, 120)
    frame["cp"] = rng.choice([0, 1, 2, 3], size=rows, p=[0.85, 0.05, 0.05, 0.05])
    frame["thal"] = rng.choice([1, 2, 3], size=rows, p=[0.7, 0.15, 0.15])
    frame.loc[rng.random(rows) < 0.4, "chol"] = np.nan
    frame.loc[rng.random(rows) < 0.3, "ca"] = np.nan
    frame.loc[rng.random(rows) < 0.25, "trestbps"] = np.nan
    return _as_requests(frame)
