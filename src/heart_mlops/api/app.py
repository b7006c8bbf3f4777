"""The serving API: `create_app(settings)` -> FastAPI app, served by `heart-mlops serve`.

`create_app` only assembles: settings and the model holder on `app.state` (deps.py reads them
there), the lifespan that polls the champion, the metrics middleware, the error handlers
(errors.py), one router per resource (routes/), the clinician page's files and the OpenAPI
document.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from heart_mlops import __version__
from heart_mlops.api import metrics, schemas
from heart_mlops.api.errors import add_error_handlers
from heart_mlops.api.model_holder import ModelHolder, settle_heap
from heart_mlops.api.routes import feedback, model, predict, service, ui
from heart_mlops.api.shadow import ShadowScorer
from heart_mlops.api.spool import NoLog, PredictionLog
from heart_mlops.settings import Settings


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the app runs, poll the champion of `app.state.holder` and score @challenger in
    shadow in background tasks, and write the prediction log's spool to its database in a
    thread; on exit, stop them (the shadow queue scored, then the log drained) and drop this
    worker's live gauges."""
    metrics.record_model(None)
    metrics.record_serving_champion(False)
    settle_heap()
    app.state.prediction_log.start()
    app.state.shadow.start()
    poller = asyncio.create_task(app.state.holder.poll_forever(), name="champion-poller")
    try:
        yield
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await app.state.shadow.close()
        # SIGTERM: what was answered reaches the database, or stays spooled for the next worker
        await asyncio.to_thread(app.state.prediction_log.close)
        metrics.worker_exiting()


def openapi_document(app: FastAPI, request_schemas: dict[str, TypeAdapter]) -> dict:
    """The app's OpenAPI document, built once, with the JSON schema of each body that routes
    read themselves (name -> adapter) under components/schemas."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name, adapter in request_schemas.items():
            schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[name] = schema
        app.openapi_schema = document
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API serving the champion of `settings.model_name` (default: Settings() from the
    environment). Nothing is loaded before the app starts: its lifespan polls the registry."""
    settings = settings or Settings()
    app = FastAPI(
        title="heart-mlops API",
        version=__version__,
        lifespan=lifespan,
        description="P(heart disease) from 13 clinical features, served from the registered "
        f"champion of '{settings.model_name}'.",
    )
    app.state.settings = settings
    app.state.holder = ModelHolder(settings)
    app.state.prediction_log = (
        PredictionLog(settings.prediction_spool, settings.prediction_log_url)
        if settings.prediction_log_enabled
        else NoLog()
    )
    app.state.shadow = ShadowScorer(app.state.holder, app.state.prediction_log)
    app.add_middleware(metrics.RequestMetrics)
    add_error_handlers(app)
    app.include_router(predict.build_router(settings.api_max_batch))
    app.include_router(service.router)
    app.include_router(model.router)
    app.include_router(feedback.router)
    app.include_router(ui.router)
    ui.mount_static(app)
    request_schemas = {
        "PredictRequest": schemas.PREDICT_REQUEST,
        "BatchRequest": schemas.batch_request(settings.api_max_batch),
    }
    app.openapi = functools.partial(openapi_document, app, request_schemas)
    return app
