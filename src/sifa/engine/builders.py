"""From a config to the objects of a run: datasets, model, optimiser, schedule."""

from __future__ import annotations

import contextlib
import logging
import math

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sifa.data.datasets import VideoClipDataset
from sifa.data.sampling import DenseSampler
from sifa.data.transforms import eval_transform, train_transform
from sifa.engine.config import ConfigError, dataset_spec
from sifa.engine.schedule import WarmupCosine
from sifa.models import create_model, load_2d_resnet_weights

logger = logging.getLogger(__name__)


def build_train_set(config: DictConfig, seed: int) -> VideoClipDataset:
    data = config.data
    transform = train_transform(
        size=data.train_size,
        crop=data.train_crop,
        scale=tuple(data.scale),
        ratio=tuple(data.ratio),
        flip=data.flip,
        color_jitter=tuple(data.color_jitter) if data.color_jitter is not None else None,
        color_jitter_p=data.color_jitter_p,
        grayscale_p=data.grayscale_p,
        blur_p=data.blur_p,
        mean=tuple(data.mean),
        std=tuple(data.std),
    )
    sampler = DenseSampler(
        data.clip_len, data.frame_interval, random_start=True, short_video=data.short_video
    )
    return VideoClipDataset.from_spec(
        dataset_spec(config, "train"),
        sampler=sampler,
        transform=transform,
        on_error=data.on_error,
        seed=seed,
        cache_videos=data.cache_videos,
    )


def build_eval_set(
    config: DictConfig, split: str, *, clips: int, crops: int, class_names: list[str] | None = None
) -> VideoClipDataset:
    """Multi-view evaluation data: ``clips x crops`` views per video, ``(views, C, T, H, W)``."""
    data = config.data
    transform = eval_transform(
        short_side=data.test_short_side,
        crop_size=data.test_crop_size,
        crops=crops,
        mean=tuple(data.mean),
        std=tuple(data.std),
    )
    sampler = DenseSampler(
        data.clip_len, data.frame_interval, num_clips=clips, short_video=data.short_video
    )
    dataset = VideoClipDataset.from_spec(
        dataset_spec(config, split),
        sampler=sampler,
        transform=transform,
        multi_view=True,
        on_error=data.on_error,
        cache_videos=data.cache_videos,
    )
    if class_names is not None and dataset.class_names != list(class_names):
        raise ConfigError(
            f"data.{split} has classes {dataset.class_names[:5]}... but the model was trained on "
            f"{list(class_names)[:5]}... ({len(class_names)} classes): give data.{split}.labels"
        )
    return dataset


def build_model(config: DictConfig, num_classes: int) -> nn.Module:
    switches = OmegaConf.to_container(config.model.switches, resolve=True)
    if "num_classes" in switches:
        raise ConfigError("model.switches.num_classes is set from the dataset's class names")
    try:
        model = create_model(config.model.name, num_classes=num_classes, **switches)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model: {error}") from error
    if config.model.pretrained:
        not_filled = load_2d_resnet_weights(model, config.model.pretrained)
        logger.info("inflated %s; %d keys left at init", config.model.pretrained, len(not_filled))
    return model


def build_optimizer(config: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    optim = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if optim.name == "sgd":
        if optim.nesterov and optim.momentum <= 0:
            raise ConfigError("optim.nesterov needs optim.momentum > 0")
        return torch.optim.SGD(
            params,
            lr=optim.lr,
            momentum=optim.momentum,
            nesterov=optim.nesterov,
            weight_decay=optim.weight_decay,
        )
    return torch.optim.AdamW(
        params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay
    )


def build_scheduler(
    config: DictConfig, optimizer: torch.optim.Optimizer, updates_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    optim = config.optim
    total = optim.epochs * updates_per_epoch
    warmup = min(total, round(optim.warmup_epochs * updates_per_epoch))
    factor = WarmupCosine(
        total, warmup, optim.warmup_start_factor, optim.min_lr / optim.lr if optim.lr else 0.0
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def updates_per_epoch(batches: int, accumulate: int) -> int:
    return max(1, math.ceil(batches / accumulate))


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a precision setting (fp32: none). fp16 needs CUDA."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use bf16 on the CPU")
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)
