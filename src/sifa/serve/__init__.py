"""``sifa serve``: an HTTP API and a web page around a trained model (FastAPI and uvicorn,
the ``serve`` extra)."""

from sifa.serve.app import ServeSettings, create_app
from sifa.serve.batching import ClipBatcher

__all__ = ["ClipBatcher", "ServeSettings", "create_app"]
