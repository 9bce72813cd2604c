"""Training, evaluation and prediction: the engine behind ``sifa train``, ``eval``, ``predict``
and ``demo``."""

from sifa.engine.checkpoint import load_model
from sifa.engine.config import ConfigError, TrainConfig, load_config
from sifa.engine.evaluate import evaluate_checkpoint
from sifa.engine.trainer import TrainResult, train

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainResult",
    "evaluate_checkpoint",
    "load_config",
    "load_model",
    "train",
]
