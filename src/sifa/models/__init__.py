"""Video recognition models: SIFA-Net, SIFA-Transformer and their baselines, with a registry."""

from sifa.models import resnet, swin  # noqa: F401  (register the ResNet and Swin families)
from sifa.models.losses import classification_loss
from sifa.models.registry import create_model, list_models, model_entry, register_model
from sifa.models.resnet import DualLogits, ResNet3d
from sifa.models.swin import SwinVideo
from sifa.models.weights import (
    CheckpointError,
    inflate_resnet_state_dict,
    inflate_swin_state_dict,
    load_2d_resnet_weights,
    load_2d_swin_weights,
    load_2d_weights,
    load_video_weights,
    read_state_dict,
)

__all__ = [
    "CheckpointError",
    "DualLogits",
    "ResNet3d",
    "SwinVideo",
    "classification_loss",
    "create_model",
    "inflate_resnet_state_dict",
    "inflate_swin_state_dict",
    "list_models",
    "load_2d_resnet_weights",
    "load_2d_swin_weights",
    "load_2d_weights",
    "load_video_weights",
    "model_entry",
    "read_state_dict",
    "register_model",
]
