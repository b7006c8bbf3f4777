"""The server's own ceiling for bench_api.py: a FastAPI endpoint that reads the body and answers
fixed JSON, served by uvicorn as `heart-mlops serve` serves the API (one worker, access log on).

    uvicorn constant_app:app --app-dir benchmarks --workers 1 --log-level info --port PORT
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

ANSWER = (
    b'{"prediction":1,"probability":0.75,"threshold":0.5,"model_version":"1",'
    b'"label":"heart disease"}'
)
app = FastAPI()


@app.get("/health/ready")
async def ready() -> Response:
    """Ready as soon as it serves."""
    return Response(b'{"status":"ok"}', media_type="application/json")


@app.post("/predict")
@app.post("/predict/batch")
async def predict(request: Request) -> Response:
    """Read the whole body, answer the same JSON."""
    await request.body()
    return Response(ANSWER, media_type="application/json")
