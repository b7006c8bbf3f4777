"""GET /features and GET /ui: the feature table as JSON, and the clinician page built on it.

The page is three static files (api/static: index.html, ui.css, ui.js), no build step and
nothing fetched from elsewhere: its Content-Security-Policy lets it load and call this server
only. It reads /features (the form), /model/info (version, validation figures) and
/predict?explain=true (the result).
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from heart_mlops.api import schemas

STATIC = Path(__file__).resolve().parents[1] / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter()


@functools.cache
def _feature_table() -> dict:
    return schemas.feature_table()


@router.get(
    "/features",
    response_model=schemas.FeatureTable,
    tags=["features"],
    summary="The 13 features: clinical names, units, allowed values; the model's intended use",
)
async def features() -> dict:
    """
    \f
    The feature table (data.FEATURE_SPECS) in the order of the `features` list: each feature's
    name, clinical title, unit, range or codes with their meanings, missing code and what the
    API accepts; and the intended use and limitations of the model (model_card.py).
    """
    return _feature_table()


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
async def clinician_page() -> HTMLResponse:
    """The clinician page (api/static/index.html): a form of the 13 features, P(disease), its
    main factors and the model's validation figures."""
    return HTMLResponse((STATIC / "index.html").read_bytes(), headers=PAGE_HEADERS)


@router.get("/ui/", include_in_schema=False)
async def clinician_page_slash() -> RedirectResponse:
    """/ui/ -> /ui (relative, so it holds behind a proxy's path prefix)."""
    return RedirectResponse("../ui", status_code=308)


def mount_static(app: FastAPI) -> None:
    """Serve the page's files under /ui/ (after the routes above, which take /ui and /ui/)."""
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui-static")
