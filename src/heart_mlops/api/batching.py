"""Dynamic batching of single rows: the rows of /predict requests waiting in the same turn of
the event loop are scored together, in one call of the runtime.

A call of the runtime has a fixed cost (ONNX Runtime runs every node of the graph once per call,
whatever the number of rows) that dominates a single row. Under concurrent load many requests
are parsed in one turn of the loop, and share one call. Waiting for the end of the turn costs a
lone request a pass through the loop, so the batcher adapts: while batches hold one row (no
concurrent requests), rows are scored at once, and one row in PROBE_EVERY waits to see whether
others arrive with it. The idea of Triton's or Ray Serve's dynamic batching, with no window.
"""

from __future__ import annotations

import asyncio

import numpy as np

from heart_mlops.api import metrics
from heart_mlops.api.runtime import Runtime

PROBE_EVERY = 16


class RowBatcher:
    """P(disease) of single rows (1, 13) of one runtime, scored together when requests
    arrive together. One per served model; used from the event loop's thread only."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._rows: list[np.ndarray] = []
        self._waiters: list[asyncio.Future] = []
        self._alone = True  # the last batch held one row
        self._unprobed = 0  # rows scored at once since the last batch

    async def score(self, row: np.ndarray) -> float:
        """P(disease) of `row` (1, 13). Raises what the runtime raised for its batch."""
        if self._alone and not self._rows and self._unprobed < PROBE_EVERY:
            self._unprobed += 1
            metrics.ROW_BATCH.observe(1)
            return float(self.runtime(row)[0])
        loop = asyncio.get_running_loop()
        if not self._rows:
            loop.call_soon(self._flush)
        waiter = loop.create_future()
        self._rows.append(row)
        self._waiters.append(waiter)
        return await waiter

    def _flush(self) -> None:
        rows, waiters = self._rows, self._waiters
        self._rows, self._waiters = [], []
        self._alone, self._unprobed = len(rows) == 1, 0
        metrics.ROW_BATCH.observe(len(rows))
        try:
            probabilities = self.runtime(np.concatenate(rows)).tolist()
        except Exception as exc:  # every request of the batch answers with the failure
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter, probability in zip(waiters, probabilities, strict=True):
            if not waiter.done():
                waiter.set_result(probability)
