"""The served model: which champion version is loaded, loading it, and watching the alias.

One holder per app (one per uvicorn worker). Loads run in a worker thread, so requests keep
being answered with the current model meanwhile; a new model replaces the old one in a single
assignment only after it loaded and compiled, so a failed load changes nothing.

The served model can stop being the champion while it keeps serving: its version deleted, the
alias removed or moved to a version that fails to load, the registered model deleted. Each check
records what @champion resolves to and, while the served version is not that one, why
(`ChampionStatus`), for /health, /model/info and the `heart_api_serving_champion` gauge.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import threading
import time
from dataclasses import dataclass, field, replace

from heart_mlops import registry
from heart_mlops.api import metrics
from heart_mlops.api.batching import RowBatcher
from heart_mlops.api.explain import ExplainerSlot
from heart_mlops.api.runtime import Runtime, load_runtime
from heart_mlops.errors import ExplanationError
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
    created: int | None = None  # the version's creation time in the registry (ms)
    explainer: ExplainerSlot | None = None  # `explain=true`; built at its first use
    rows: RowBatcher | None = None  # single rows scored together (batching.py)


@dataclass(frozen=True)
class ChampionStatus:
    """What @champion resolved to at the last check that reached the registry.

    A version is its number and creation time: a registered model deleted and registered
    again numbers its versions from 1 again."""

    version: str | None = None  # None: no version holds the alias (or no check reached it yet)
    created: int | None = None
    problem: str | None = None  # why the served version is not this one; None when it is

    @property
    def identity(self) -> tuple[str, int | None] | None:
        """(version, creation time) of the version under @champion, None when there is none."""
        return None if self.version is None else (self.version, self.created)

    def serves(self, model: LoadedModel | None) -> bool:
        """Whether `model` is the version under @champion (False for no model)."""
        return model is not None and _identity(model) == self.identity


@dataclass(frozen=True)
class Outcome:
    """What a check of the alias did."""

    changed: bool
    version: str | None
    previous_version: str | None
    detail: str
    failed: bool = False
    loaded: bool = False  # a version was loaded by this check


def _identity(model: LoadedModel | None) -> tuple[str, int | None] | None:
    """(version, creation time) of `model`, None for no model. Checks hold this rather than the
    model: a model a check still refers to when the heap is frozen would never be freed."""
    return None if model is None else (model.version, model.created)


def _still_serving(version: str | None) -> str:
    return f"still serving {'version ' + version if version else 'no model'}"


def _no_champion(name: str, previous: str | None) -> Outcome:
    """The outcome of a check that found no version under @champion: nothing to load, or
    the served version lost the alias (a failure: the API serves a model no longer chosen)."""
    if previous is None:
        return Outcome(
            False,
            None,
            None,
            f"no version of '{name}' has the alias @{registry.CHAMPION}; "
            "train one with `heart-mlops train`",
        )
    return Outcome(
        False,
        previous,
        previous,
        f"the alias @{registry.CHAMPION} of '{name}' no longer resolves (removed, or its version "
        f"or the registered model deleted), still serving version {previous}, which is no "
        f"longer @{registry.CHAMPION}",
        failed=True,
    )


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
    whether it answered at the last check and when (UTC, ISO 8601), what @champion resolved to
    and whether the served model is it (`champion`), the last error (credentials redacted).
    `refresh` loads the champion and reports a failed check or load in its Outcome,
    never raising it; `poll_forever` refreshes every api_poll_seconds."""

    settings: Settings
    current: LoadedModel | None = None
    registry_reachable: bool | None = None
    registry_checked_at: str | None = None
    last_error: str | None = None
    champion: ChampionStatus = field(default_factory=ChampionStatus)
    challenger: LoadedModel | None = None  # the version under @challenger, scored in shadow
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, *, force: bool = False) -> Outcome:
        """Load the champion if it differs from the served version (or always, with force).

        `last_error` becomes the outcome's detail when it failed, None when it did not."""
        async with self._lock:
            outcome = await asyncio.to_thread(self._refresh_blocking, force)
        self.last_error = outcome.detail if outcome.failed else None
        if outcome.failed:
            log.warning("%s", outcome.detail)
        elif outcome.changed:
            log.info("%s", outcome.detail)
        return outcome

    def _refresh_blocking(self, force: bool) -> Outcome:
        served = _identity(self.current)
        previous = served[0] if served else None
        name = self.settings.model_name
        try:
            with _REGISTRY_LOCK:
                registry.connect(self.settings)
                found = registry.version_by_alias(name, registry.CHAMPION)
        except Exception as exc:  # any failure to talk to the registry
            self.registry_reachable, self.registry_checked_at = False, _now()
            return Outcome(
                False,
                previous,
                previous,
                redact(
                    f"model registry unreachable, {_still_serving(previous)}: "
                    f"{type(exc).__name__}: {exc}"
                ),
                failed=True,
            )
        self.registry_reachable, self.registry_checked_at = True, _now()
        champion = ChampionStatus(
            registry.version_of(found), getattr(found, "creation_timestamp", None)
        )
        if champion.version is None:
            outcome = _no_champion(name, previous)
        elif champion.identity == served and not force:
            outcome = Outcome(False, previous, previous, f"version {previous} is still champion")
        else:
            outcome = self._load_and_publish(champion, served)
        if not outcome.loaded:  # a load records the status itself, before serving the model
            self._record_champion(champion, served, outcome.detail)
        self._refresh_challenger()
        return outcome

    def _refresh_challenger(self) -> None:
        """Load the version under @challenger when it changed (same runtime and parity check
        as the champion); none when no version holds it. A failed load keeps the old one."""
        name = self.settings.model_name
        try:
            with _REGISTRY_LOCK:
                registry.connect(self.settings)
                found = registry.version_by_alias(name, registry.CHALLENGER)
            version = registry.version_of(found)
            identity = None if version is None else (version, found.creation_timestamp)
            if identity == _identity(self.challenger):
                return
            loaded = None if version is None else self._load(version, identity[1])
        except Exception as exc:
            log.warning(
                "%s", redact(f"loading @{registry.CHALLENGER} failed: {type(exc).__name__}: {exc}")
            )
            return
        if loaded is not None:
            loaded.info["alias"] = registry.CHALLENGER
            log.info("scoring version %s (@%s) in shadow", version, registry.CHALLENGER)
        self.challenger = loaded

    def _load_and_publish(self, champion: ChampionStatus, served: tuple | None) -> Outcome:
        previous = served[0] if served else None
        try:
            loaded = self._load(champion.version, champion.created)
        except Exception as exc:
            return Outcome(
                False,
                previous,
                previous,
                redact(
                    f"loading version {champion.version} failed, {_still_serving(previous)}: "
                    f"{type(exc).__name__}: {exc}"
                ),
                failed=True,
            )
        self._publish(loaded)
        return Outcome(
            champion.identity != served,
            loaded.version,
            previous,
            f"serving version {loaded.version} ({loaded.info['model_type']}, "
            f"{loaded.runtime.kind} runtime)",
            loaded=True,
        )

    def _record_champion(self, champion: ChampionStatus, served: tuple | None, detail: str) -> None:
        """Record what @champion resolves to while the model of identity `served` serves, and
        its gauge; `detail` says why they differ, when they do and a model serves."""
        serving = served is not None and champion.identity == served
        problem = None if serving or served is None else detail
        self.champion = replace(champion, problem=problem)
        metrics.record_serving_champion(serving)

    def _publish(self, loaded: LoadedModel) -> None:
        """Serve `loaded`, the version under @champion. Its metrics are recorded first:
        whoever sees the new model served (readiness, /predict) also sees it in /metrics."""
        metrics.record_model(loaded.version)
        champion = ChampionStatus(loaded.version, loaded.created)
        self._record_champion(champion, _identity(loaded), "")
        self.current = loaded
        settle_heap()

    def _load(self, version: str, created: int | None = None) -> LoadedModel:
        with _REGISTRY_LOCK:
            registry.connect(self.settings)
            champion = registry.load_champion(self.settings, version)
            runtime = load_runtime(champion, self.settings.api_onnx_threads)
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
            "parameters": runtime.parameters,
            "metrics": champion.metrics,
            "data": champion.data,
        }
        loaded_at = _now()
        return LoadedModel(
            version,
            champion.threshold,
            runtime,
            {**info, "loaded_at": loaded_at},
            loaded_at,
            created,
            ExplainerSlot(lambda: self._explainer(champion, runtime), settle_heap),
            RowBatcher(runtime),
        )

    def _explainer(self, champion: registry.Champion, runtime: Runtime):
        """The Explainer of a loaded version: its pipeline and its training rows from the
        registry. ExplanationError when the version was registered without training rows;
        what the registry raises when it cannot be read."""
        from heart_mlops.explanations import Explainer, reference_rows

        with _REGISTRY_LOCK:
            registry.connect(self.settings)
            reference = registry.reference_frame(champion.model_name, champion.version)
            if reference is None:
                raise ExplanationError(
                    f"version {champion.version} was registered without its training rows "
                    "(before explanations existed); a version registered now has them"
                )
            pipeline = champion.pipeline
        settings = self.settings
        return Explainer(
            pipeline,
            reference_rows(reference),
            background_rows=settings.api_explain_background_rows,
            permutations=settings.api_explain_permutations,
            seed=settings.seed,
            served=runtime,
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
