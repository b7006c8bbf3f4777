"""The serving API of the champion model (FastAPI)."""

from heart_mlops.api.app import create_app

__all__ = ["create_app"]
