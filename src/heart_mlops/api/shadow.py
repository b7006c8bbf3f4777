"""Shadow scoring: the version under @challenger scores every answered request after the
champion's answer, logged under the same request ids with role `challenger`.

The prediction routes `offer` each answered request to a bounded queue and return; a task of
the worker's event loop takes them off it and scores them. The champion's answer never waits:
when the queue is full the request is not scored in shadow, and its rows are counted
(`heart_api_shadow_skipped_total`). Each model decides at its own threshold; rows where the two
decisions differ are counted (`heart_api_shadow_disagreements_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np

from heart_mlops.api import metrics

log = logging.getLogger(__name__)

QUEUE_REQUESTS = 256  # answered requests waiting for the challenger, per worker


class ShadowScorer:
    """This worker's shadow queue and the task that empties it (`start`, `close`)."""

    def __init__(self, holder, prediction_log, capacity: int = QUEUE_REQUESTS) -> None:
        self.holder = holder
        self.prediction_log = prediction_log
        self.capacity = capacity
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the scoring task on the running event loop."""
        self._queue = asyncio.Queue(self.capacity)
        self._task = asyncio.create_task(self._run(), name="shadow-scoring")

    def offer(
        self,
        ids: list[str],
        rows: np.ndarray,
        decisions: list[int],
        received: float,
        correlation: str | None,
    ) -> None:
        """Queue an answered request (its ids, rows (n, 13) and the champion's decisions) for
        the challenger, if one is loaded; count its rows as skipped when the queue is full."""
        if self.holder.challenger is None or self._queue is None:
            return
        try:
            self._queue.put_nowait((ids, rows, decisions, received, correlation))
        except asyncio.QueueFull:
            metrics.SHADOW_SKIPPED.inc(len(ids))

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await asyncio.sleep(0)  # the champion's answer goes out first
            finally:  # also when cancelled: a request taken off the queue is scored
                self._score(*item)

    def _score(self, ids, rows, decisions, received, correlation) -> None:
        challenger = self.holder.challenger
        if challenger is None:  # the alias was removed meanwhile
            metrics.SHADOW_SKIPPED.inc(len(ids))
            return
        started = time.perf_counter()
        try:
            p = challenger.runtime(rows)
        except Exception:  # never let one request stop the scoring
            log.exception("shadow scoring by version %s failed", challenger.version)
            metrics.SHADOW_SKIPPED.inc(len(ids))
            return
        shadow = (p >= challenger.threshold).astype(int)
        metrics.SHADOW_SCORED.inc(len(ids))
        differ = int(np.count_nonzero(shadow != np.asarray(decisions)))
        if differ:
            metrics.SHADOW_DISAGREEMENTS.inc(differ)
        self.prediction_log.append(
            ids, rows, p.tolist(), shadow.tolist(), challenger, role="challenger",
            received=received, latency_ms=(time.perf_counter() - started) * 1000,
            correlation=correlation,
        )  # fmt: skip

    async def close(self) -> None:
        """Stop the task, then score what is still queued (the log is drained after this)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        while not self._queue.empty():
            self._score(*self._queue.get_nowait())
        self._task = None
