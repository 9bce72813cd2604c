"""Deployment: a model or a training checkpoint as ONNX or as a ``torch.export`` program."""

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

__all__ = [
    "FORMATS",
    "METADATA_KEYS",
    "ExportError",
    "ExportResult",
    "export_checkpoint",
    "export_model",
    "load_program",
    "onnx_session",
]
