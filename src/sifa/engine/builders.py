"""From a config to the objects of a run: datasets, model, optimiser, schedule."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from fnmatch import fnmatchcase
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sifa.data.datasets import VideoClipDataset
from sifa.data.presets import eval_transform, train_transform
from sifa.data.sampling import DenseSampler, SegmentSampler
from sifa.data.transforms import Compose
from sifa.engine.checkpoint import read_metadata, resolve_checkpoint
from sifa.engine.config import ConfigError, check_lr_scales, dataset_spec
from sifa.engine.schedule import WarmupCosine
from sifa.models import create_model, load_2d_weights, load_video_weights
from sifa.models.hub import is_hub_id
from sifa.models.weights import CheckpointError

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def build_sampler(
    config: DictConfig, *, training: bool, clips: int = 1
) -> DenseSampler | SegmentSampler:
    """The frame sampler of ``data.sampling``: dense clips (a random start in training, ``clips``
    evenly spread ones in testing) or ``data.clip_len`` segments (TSN)."""
    data = config.data
    if data.sampling == "segment":
        if data.frame_interval != 1:
            raise ConfigError(
                "data.frame_interval is for dense sampling; segment sampling spreads "
                f"data.clip_len frames over the whole video (got {data.frame_interval})"
            )
        return SegmentSampler(data.clip_len, num_clips=clips, random_offset=training)
    return DenseSampler(
        data.clip_len,
        data.frame_interval,
        num_clips=clips,
        random_start=training,
        short_video=data.short_video,
    )


def build_train_transform(config: DictConfig) -> Compose:
    """The training clip transform of ``config.data``: uint8 ``(T, H, W, 3)`` -> float
    ``(3, T, train_size, train_size)``."""
    data = config.data
    return train_transform(
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
        rand_augment=(
            OmegaConf.to_container(data.rand_augment) if data.rand_augment is not None else None
        ),
        random_erasing=data.random_erasing,
    )


def build_eval_transform(config: DictConfig, crops: int | None = None) -> Compose:
    """The test-view transform of ``config.data``: short side to ``test_short_side``, ``crops``
    (default ``test_crops``) crops of ``test_crop_size``, normalised."""
    data = config.data
    return eval_transform(
        short_side=data.test_short_side,
        crop_size=data.test_crop_size,
        crops=data.test_crops if crops is None else crops,
        mean=tuple(data.mean),
        std=tuple(data.std),
    )


def build_train_set(config: DictConfig, seed: int) -> VideoClipDataset:
    data = config.data
    transform = build_train_transform(config)
    sampler = build_sampler(config, training=True)
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
    transform = build_eval_transform(config, crops)
    sampler = build_sampler(config, training=False, clips=clips)
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


def build_model(
    config: DictConfig, num_classes: int, class_names: list[str] | None = None
) -> nn.Module:
    """The model of ``config`` for ``num_classes`` classes, with ``model.pretrained`` or
    ``model.init_from`` weights (``class_names``: the dataset's, to tell whether an
    ``init_from`` checkpoint's classifier fits)."""
    switches = OmegaConf.to_container(config.model.switches, resolve=True)
    if "num_classes" in switches:
        raise ConfigError("model.switches.num_classes is set from the dataset's class names")
    try:
        model = create_model(config.model.name, num_classes=num_classes, **switches)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model: {error}") from error
    if config.model.pretrained and config.model.init_from:
        raise ConfigError(
            "model.pretrained and model.init_from are both set: init_from already holds every "
            "weight but the classifier; leave pretrained out"
        )
    if config.model.pretrained:
        not_filled = load_2d_weights(model, config.model.pretrained)
        logger.info("inflated %s; %d keys left at init", config.model.pretrained, len(not_filled))
    if config.model.init_from:
        _initialise_from(model, config.model.init_from, class_names)
    return model


def _initialise_from(model: nn.Module, source: str, class_names: list[str] | None) -> None:
    """``model.init_from``: the weights of a video checkpoint; its classifier only where the
    classes are the same (a sifa checkpoint or model folder says which; a plain state dict:
    the same count)."""
    path = Path(source)
    if is_hub_id(source) or path.is_dir() or path.suffix not in WEIGHT_SUFFIXES:
        # a run folder, a model folder, a Hub id or a checkpoint name
        path = resolve_checkpoint(source)
    keep = True
    if path.suffix == ".safetensors" and class_names is not None:
        with contextlib.suppress(CheckpointError):  # a plain safetensors state dict
            trained_on = json.loads(read_metadata(path)["class_names"])
            keep = trained_on == list(class_names)
    not_filled = load_video_weights(model, path, keep_classifier=keep)
    logger.info(
        "started from %s; %s", path,
        f"classifier left at init ({', '.join(not_filled)})" if not_filled else "all weights",
    )  # fmt: skip


OFFSET_CONV_PATTERN = "*.offset_conv.*"  # SIFA's offset convs, in every model family


def parameter_groups(config: DictConfig, model: nn.Module) -> list[dict]:
    """The trainable parameters of ``model`` in optimiser parameter groups.

    A parameter gets weight decay ``optim.weight_decay`` unless it is 1-D and
    ``optim.decay_norm_and_bias`` is false, or an ``optim.no_weight_decay`` pattern matches its
    name; its learning rate is ``optim.lr`` times the scale of the first ``optim.lr_scales``
    pattern that matches its name (1.0 if none), and for SIFA's offset convs
    (``*.offset_conv.*``) times ``optim.offset_lr_scale``. One group per distinct (scale,
    weight decay), none empty, each with its own ``lr`` (``optim.lr * scale``), ``weight_decay`` and
    ``lr_scale``: the scheduler's LambdaLR multiplies every group's initial ``lr`` by the same
    factor, so each group follows the schedule at its own scale (min_lr scaled alike). The
    first group is the one at the base learning rate with weight decay where there is one (the
    lr the trainer logs), the others follow in the order of their first parameter.

    A pattern that matches no parameter of the model (trainable or not), or an ``lr_scales``
    pattern whose parameters all went to earlier patterns, is a :class:`ConfigError`.
    """
    optim = config.optim
    scales = check_lr_scales(config)
    named = list(model.named_parameters())
    names = [name for name, _ in named]
    no_decay = [str(pattern) for pattern in optim.no_weight_decay]
    _check_patterns("optim.no_weight_decay", no_decay, names, config, first_match=False)
    _check_patterns("optim.lr_scales", list(scales), names, config, first_match=True)

    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in named:
        if not param.requires_grad:
            continue
        decayed = optim.decay_norm_and_bias or param.ndim > 1
        decayed = decayed and not any(fnmatchcase(name, pattern) for pattern in no_decay)
        scale = next((s for pattern, s in scales.items() if fnmatchcase(name, pattern)), 1.0)
        if fnmatchcase(name, OFFSET_CONV_PATTERN):
            scale *= float(optim.offset_lr_scale)
        key = (scale, float(optim.weight_decay) if decayed else 0.0)
        groups.setdefault(key, []).append(param)
    base = (1.0, float(optim.weight_decay))
    order = sorted(groups, key=lambda key: key != base)  # stable: the rest keep their order
    result = [
        {"params": groups[key], "lr": optim.lr * key[0], "weight_decay": key[1], "lr_scale": key[0]}
        for key in order
    ]
    if len(result) > 1:
        logger.info(
            "optimizer parameter groups: %s",
            "; ".join(
                f"{len(g['params'])} tensors ({sum(p.numel() for p in g['params']):,} values) "
                f"lr x{g['lr_scale']:g}, weight decay {g['weight_decay']:g}"
                for g in result
            ),
        )
    return result


def _check_patterns(
    field: str, patterns: list[str], names: list[str], config: DictConfig, *, first_match: bool
) -> None:
    """Every pattern matches a parameter name; with ``first_match``, one that no earlier
    pattern matches."""
    taken: set[str] = set()
    for index, pattern in enumerate(patterns):
        matched = {name for name in names if fnmatchcase(name, pattern)}
        if not matched:
            examples = ", ".join(names[:3] + names[-2:]) if len(names) > 5 else ", ".join(names)
            raise ConfigError(
                f"{field}: pattern {pattern!r} matches no parameter of {config.model.name} "
                f"(shell-style patterns on names such as {examples})"
            )
        if first_match and matched <= taken:
            earlier = [p for p in patterns[:index] if any(fnmatchcase(n, p) for n in matched)]
            raise ConfigError(
                f"{field}: every parameter that pattern {pattern!r} matches already goes to the "
                f"earlier {', '.join(map(repr, earlier))} (the first matching pattern wins): "
                "reorder or remove it"
            )
        taken |= matched


def build_optimizer(config: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters of ``model``, in the groups of
    :func:`parameter_groups`."""
    optim = config.optim
    if optim.name == "sgd" and optim.nesterov and optim.momentum <= 0:
        raise ConfigError("optim.nesterov needs optim.momentum > 0")
    groups = parameter_groups(config, model)
    if optim.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=optim.lr,
            momentum=optim.momentum,
            nesterov=optim.nesterov,
            weight_decay=optim.weight_decay,
        )
    return torch.optim.AdamW(
        groups, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay
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
