"""Deployment: a model or a training checkpoint as ONNX or as a ``torch.export`` program, and a
trained run as a Hugging Face Hub model folder."""

from sifa.deploy.export import (
    FORMATS,
    METADATA_KEYS,
    ExportError,
    ExportResult,
    export_checkpoint,
    export_model,
    load_program,
    onnx_session,
)
from sifa.deploy.publish import PublishError, PublishResult, publish_run

__all__ = [
    "FORMATS",
    "METADATA_KEYS",
    "ExportError",
    "ExportResult",
    "PublishError",
    "PublishResult",
    "export_checkpoint",
    "export_model",
    "load_program",
    "onnx_session",
    "publish_run",
]
