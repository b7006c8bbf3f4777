"""Dynamic batching of single rows (api/batching.py): concurrent /predict requests share one
call of the model and get the answers they would get alone."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
import pytest

from heart_mlops.api.batching import PROBE_EVERY, RowBatcher
from heart_mlops.data import FEATURES
from heart_mlops.onnx_model import probe_rows

pytestmark = pytest.mark.timeout(300)


class CountingModel:
    """P(disease) = the first feature / 100, and the number of rows of each call."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(len(rows))
        if self.fail:
            raise ValueError("the model failed")
        return rows[:, 0] / 100


def rows_of(ages) -> list[np.ndarray]:
    return [np.array([[age] + [0.0] * 12]) for age in ages]


def test_rows_arriving_together_share_one_call_and_a_lone_row_waits_for_nothing():
    model = CountingModel()
    batcher = RowBatcher(model)

    async def scenario():
        # no concurrency seen yet: rows are scored at once, one row in PROBE_EVERY waits
        alone = [await batcher.score(row) for row in rows_of(range(30, 30 + PROBE_EVERY))]
        assert model.calls == [1] * PROBE_EVERY
        together = await asyncio.gather(*(batcher.score(row) for row in rows_of(range(40, 50))))
        assert model.calls[PROBE_EVERY:] == [10]  # the probe found nine others
        more = await asyncio.gather(*(batcher.score(row) for row in rows_of(range(50, 55))))
        assert model.calls[PROBE_EVERY + 1 :] == [5]  # batching goes on while batches are full
        return alone, together, more

    alone, together, more = asyncio.run(scenario())
    assert alone == pytest.approx([age / 100 for age in range(30, 30 + PROBE_EVERY)])
    assert together == pytest.approx([age / 100 for age in range(40, 50)])  # each its own
    assert more == pytest.approx([age / 100 for age in range(50, 55)])


def test_a_failed_call_fails_every_request_of_its_batch():
    batcher = RowBatcher(CountingModel(fail=True))
    batcher._alone = False  # as after a batch of several rows

    async def scenario():
        return await asyncio.gather(
            *(batcher.score(row) for row in rows_of(range(3))), return_exceptions=True
        )

    outcomes = asyncio.run(scenario())
    assert [str(outcome) for outcome in outcomes] == ["the model failed"] * 3


def _batched_counts(metrics_text: str) -> tuple[float, float]:
    """(model calls, rows) of single-row requests, from heart_api_row_batch_size."""
    count = re.search(r"^heart_api_row_batch_size_count (\S+)$", metrics_text, re.M)
    total = re.search(r"^heart_api_row_batch_size_sum (\S+)$", metrics_text, re.M)
    assert count and total, "no heart_api_row_batch_size in /metrics"
    return float(count.group(1)), float(total.group(1))


def test_concurrent_requests_are_scored_together_and_answered_as_the_batch_endpoint_does(
    client,
):
    bodies = [  # rows over every feature's range, missing values and missing codes
        {
            "patient": {
                name: None if np.isnan(v) else v for name, v in zip(FEATURES, row, strict=True)
            }
        }
        for row in probe_rows(64, seed=7).tolist()
    ]

    async def scenario():
        # requests in flight together in the app's own event loop, as uvicorn runs them
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            before = _batched_counts((await http.get("/metrics")).text)
            singles = await asyncio.gather(*(http.post("/predict", json=b) for b in bodies))
            after = _batched_counts((await http.get("/metrics")).text)
            batch = await http.post("/predict/batch", json={"instances": bodies})
            return singles, batch, before, after

    singles, batch, before, after = client.portal.call(scenario)
    assert all(response.status_code == 200 for response in singles), singles[0].text
    assert batch.status_code == 200, batch.text
    expected = batch.json()["predictions"]
    for response, one in zip(singles, expected, strict=True):
        answer = response.json()
        assert answer["probability"] == pytest.approx(one["probability"], abs=1e-12)
        assert answer["prediction"] == one["prediction"]
        assert response.headers["X-Request-ID"] == answer["request_id"]
    calls, scored = after[0] - before[0], after[1] - before[1]
    assert scored == len(bodies)
    assert calls < scored / 2, f"{scored:.0f} concurrent rows took {calls:.0f} model calls"
