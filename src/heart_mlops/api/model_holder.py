"""The served model: which champion version is loaded, loading it, and watching the alias.

One holder per app (one per uvicorn worker). Loads run in a worker thread, so requests keep
being answered with the current model meanwhile; a new model replaces the old one in a single
assignment only after it loaded and compiled, so a failed load changes nothing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import threading
import time
from dataclasses import dataclass, field

from heart_mlops import registry
from heart_mlops.api import metrics
from heart_mlops.api.runtime import Runtime, compile_pipeline
from heart_mlops.settings import Settings

log = logging.getLogger(__name__)

# MLflow's tracking URI is process-wide: one registry conversation at a time
_REGISTRY_LOCK = threading.Lock()
_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")


def redact(message: str) -> str:
    """An error message without credentials embedded in URIs."""
    return _CREDENTIALS.sub(r"\1***@", message)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _json_safe(value):
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


@dataclass(frozen=True)
class LoadedModel:
    """A champion version ready to serve: `runtime` maps rows (n, 13), NaN = missing, to
    P(disease) (n,); `threshold` on P(disease); `info` is GET /model/info's body; `loaded_at`
    the UTC time of the load, ISO 8601."""

    version: str
    threshold: float
    runtime: Runtime
    info: dict
    loaded_at: str


@dataclass(frozen=True)
class Outcome:
    """What a check of the alias did."""

    changed: bool
    version: str | None
    previous_version: str | None
    detail: str
    failed: bool = False
    loaded: bool = False  # a version was loaded by this check


def settle_heap() -> None:
    """Take what is alive now (imports, the served model) out of the garbage collector's view.

    A full collection walks every live object: about 250 ms with MLflow and scikit-learn loaded,
    a pause every few hundred 1000-row batches. Frozen objects are skipped; new garbage is still
    collected, and the model replaced at the next load is freed then.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass
class ModelHolder:
    """The app's served model (`current`, None until a load succeeds) and the registry's state:
    whether it answered at the last check and when (UTC, ISO 8601), the last error (credentials
    redacted). `refresh` loads the champion and reports a failed check or load in its Outcome,
    never raising it; `poll_forever` refreshes every api_poll_seconds."""

    settings: Settings
    current: LoadedModel | None = None
    registry_reachable: bool | None = None
    registry_checked_at: str | None = None
    last_error: str | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, *, force: bool = False) -> Outcome:
        """Load the champion if it differs from the served version (or always, with force)."""
        async with self._lock:
            outcome = await asyncio.to_thread(self._refresh_blocking, force)
        if outcome.failed:
            self.last_error = outcome.detail
            log.warning("%s", outcome.detail)
        elif outcome.changed:
            self.last_error = None
            log.info("%s", outcome.detail)
        return outcome

    def _refresh_blocking(self, force: bool) -> Outcome:
        previous = self.current.version if self.current else None
        name = self.settings.model_name
        try:
            with _REGISTRY_LOCK:
                registry.connect(self.settings)
                version = registry.champion_version(name)
        except Exception as exc:  # any failure to talk to the registry
            self.registry_reachable, self.registry_checked_at = False, _now()
            return Outcome(
                False,
                previous,
                previous,
                redact(
                    f"model registry unreachable, still serving "
                    f"{'version ' + previous if previous else 'no model'}: "
                    f"{type(exc).__name__}: {exc}"
                ),
                failed=True,
            )
        self.registry_reachable, self.registry_checked_at = True, _now()
        if version is None:
            return Outcome(
                False,
                previous,
                previous,
                f"no version of '{name}' has the alias @{registry.CHAMPION} yet; "
                "train one with `heart-mlops train`",
            )
        if version == previous and not force:
            return Outcome(False, previous, previous, f"version {previous} is still champion")
        try:
            loaded = self._load(version)
        except Exception as exc:
            return Outcome(
                False,
                previous,
                previous,
                redact(
                    f"loading version {version} failed, still serving "
                    f"{'version ' + previous if previous else 'no model'}: "
                    f"{type(exc).__name__}: {exc}"
                ),
                failed=True,
            )
        self._publish(loaded)
        return Outcome(
            loaded.version != previous,
            loaded.version,
            previous,
            f"serving version {loaded.version} ({loaded.info['model_type']}, "
            f"{loaded.runtime.kind} runtime)",
            loaded=True,
        )

    def _publish(self, loaded: LoadedModel) -> None:
        """Serve `loaded`. Its metrics are recorded first: whoever sees the new model served
        (readiness, /predict) also sees it in /metrics."""
        metrics.record_model(loaded.version)
        self.current = loaded
        settle_heap()

    def _load(self, version: str) -> LoadedModel:
        with _REGISTRY_LOCK:
            registry.connect(self.settings)
            champion = registry.load_champion(self.settings, version)
            pipeline = champion.pipeline
        runtime = compile_pipeline(pipeline)
        info = {
            "model_name": champion.model_name,
            "version": version,
            "alias": registry.CHAMPION,
            "run_id": champion.run_id,
            "model_type": runtime.estimator_type,
            "candidate": champion.tags.get("candidate"),
            "tuning_label": champion.tags.get("tuning_label"),
            "runtime": runtime.kind,
            "threshold": champion.threshold,
            "parameters": {
                k: _json_safe(v) for k, v in pipeline[-1].get_params(deep=False).items()
            },
            "metrics": champion.metrics,
            "data": champion.data,
        }
        loaded_at = _now()
        return LoadedModel(
            version, champion.threshold, runtime, {**info, "loaded_at": loaded_at}, loaded_at
        )

    async def poll_forever(self) -> None:
        """Check the alias now, then every api_poll_seconds (0 = only at start)."""
        while True:
            try:
                await self.refresh()
            except Exception:  # the poller must outlive any single failure
                log.exception("checking the champion failed")
            if self.settings.api_poll_seconds <= 0:
                return
            await asyncio.sleep(self.settings.api_poll_seconds)
