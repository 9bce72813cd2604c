"""Training configuration: typed defaults merged with YAML files and ``key=value`` overrides.

The schema is a tree of dataclasses; OmegaConf merges a YAML file and command-line overrides
onto it, checks types, and refuses keys the schema does not have (the error names the key).
Values are then checked against their allowed choices and ranges here.
"""

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sifa.data.annotations import FORMATS, DatasetSpec
from sifa.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sifa.files import yaml_problem

RAND_AUGMENT_OPS = ("standard", "released")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


@dataclass
class DatasetConfig:
    """Where one split lives (see :class:`sifa.data.DatasetSpec`)."""

    format: str = "video_list"
    root: str = "???"
    annotations: str | None = None
    labels: str | None = None
    backend: str = "pyav"
    frame_template: str = "img_{:05d}.jpg"
    frame_start_index: int = 1


@dataclass
class RandAugmentConfig:
    """RandAugment: ``n`` operations per clip drawn from ``ops``, each at magnitude ``m`` on a
    scale of 0 to ``levels``; the same operations and magnitudes for every frame of a clip."""

    n: int = 2  # operations per clip
    m: float = 9.0  # magnitude, 0 .. levels
    levels: int = 10  # magnitude scale: 10 (timm) or 30 (torchvision, imgaug, the SIFA release)
    # "standard": the 14 operations of the RandAugment paper (timm, torchvision);
    # "released": the 16 of the SIFA release (adds Invert, SolarizeAdd and Cutout, no Identity)
    ops: str = "standard"


@dataclass
class DataConfig:
    train: DatasetConfig | None = None
    val: DatasetConfig | None = None
    clip_len: int = 16  # frames per clip
    frame_interval: int = 1  # step between sampled frames
    # "dense": clip_len frames frame_interval apart from a random start (Kinetics);
    # "segment": the video cut into clip_len equal segments, one frame from each (a random one
    # in training, the middle one in testing; TSN, Something-Something).
    sampling: str = "dense"
    short_video: str = "loop"  # "loop" or "pad" for videos shorter than a clip
    # Training clips.
    train_size: int = 224
    train_crop: str = "random_resized"  # or "center": short side to train_size, centre crop
    scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    flip: bool = True  # False where left and right matter (Something-Something)
    color_jitter: list[float] | None = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    # RandAugment (null: off), after the crop; recipes that use it turn colour jitter, grey
    # and blur off, as the SIFA release and Video Swin do.
    rand_augment: RandAugmentConfig | None = None
    random_erasing: float = 0.0  # probability of erasing a box of the clip (after Normalize)
    # Batch mixing (0: off): Beta(alpha, alpha) weights. With both on, a mixed batch uses cutmix
    # with probability mix_switch_prob, else mixup; a batch is mixed with probability mix_prob.
    mixup: float = 0.0  # mixup alpha (0.8 in DeiT / Video Swin recipes)
    cutmix: float = 0.0  # cutmix alpha (1.0 in DeiT recipes)
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    # Test views (sifa eval, sifa predict): clips x crops per video.
    test_short_side: int = 256
    test_crop_size: int = 256
    test_clips: int = 10
    test_crops: int = 3
    # Validation during training: cheaper views.
    val_clips: int = 1
    val_crops: int = 1
    batch_size: int = 8  # clips per process and step
    val_batch_size: int = 4  # videos per process and step (each with all its views)
    num_workers: int = 4
    # An unreadable video: "skip" replaces it by the next readable one in training (counted,
    # logged once) and leaves it out of evaluation (listed); "raise" stops with its name.
    on_error: str = "skip"
    cache_videos: bool = False  # keep decoded videos in memory (small datasets only)


@dataclass
class ModelConfig:
    name: str = "sifa_resnet50"
    switches: dict[str, Any] = field(default_factory=dict)  # keyword switches of create_model
    pretrained: str | None = None  # ImageNet 2D ResNet or Swin checkpoint to inflate
    # A video checkpoint of the same model to start from (fine-tuning): a run folder, a sifa
    # .safetensors checkpoint, a model folder (sifa publish), hf-hub:ORG/NAME or a .pth state
    # dict. The classifier is kept when the classes are the same, else left at its initial values.
    init_from: str | None = None
    sync_batchnorm: bool = False


@dataclass
class OptimConfig:
    name: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.04  # peak learning rate for the whole update (all processes, accumulation)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    epochs: int = 64
    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.01  # warm-up starts at lr * this
    min_lr: float = 0.0  # end of the cosine
    clip_grad_norm: float | None = 40.0
    accumulate: int = 1  # micro-batches per update
    label_smoothing: float = 0.0
    # Parameter groups (build_optimizer makes one per distinct lr scale and weight decay).
    # Patterns are shell-style (fnmatch, case-sensitive; `*` also crosses dots) on the names of
    # model.named_parameters(): "head.*", "*relative_position_bias_table", "layers.[01].*". A
    # pattern that matches no parameter is an error, so that a typo cannot silently do nothing.
    # In YAML, quote a pattern that starts with `*`.
    #
    # False: no weight decay on any 1-D parameter (norm weights, biases), the usual practice
    # for transformers; True: weight decay on every parameter not in no_weight_decay.
    decay_norm_and_bias: bool = True
    # Patterns whose parameters get weight decay 0 (in addition to decay_norm_and_bias).
    no_weight_decay: list[str] = field(default_factory=list)
    # Pattern -> multiplier (a number >= 0) of optim.lr, and of optim.min_lr, for the parameters
    # it matches. Tried in the given order, the first matching pattern wins; parameters no
    # pattern matches keep 1.0. A pattern that earlier patterns leave without parameters is an
    # error too. {"head.*": 1.0, "*": 0.1}: the backbone at 0.1x the head's learning rate.
    lr_scales: dict[str, float] = field(default_factory=dict)
    # Multiplies the learning rate (and min_lr) of SIFA's offset convs, the parameters named
    # "*.offset_conv.*", on top of lr_scales (models without them: no effect). Deformable
    # convolutions train their offsets slower (0.1 in mmcv's, down to 0.01): AdamW moves every
    # weight by about lr per update however small its gradient, so at the full rate the
    # offsets scatter the attention before the network has learned what to follow.
    offset_lr_scale: float = 1.0


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output_dir: str = "runs/default"
    seed: int = 0
    precision: str = "fp32"  # "fp32", "fp16" (CUDA) or "bf16"
    device: str = "auto"  # "auto", "cpu", "cuda"
    eval_every: int = 1  # epochs between validations (0: never)
    log_every: int = 20  # updates between metric log lines
    tensorboard: bool = True
    progress: bool = True  # progress bars
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    # Deterministic kernels where a backend has both (see sifa.engine.trainer.make_deterministic):
    # on a GPU the SIFA operator's key gradient without atomics, cuDNN without autotuning;
    # oneDNN's deterministic mode on a CPU. Slower on a GPU.
    deterministic: bool = False
    # Mid-epoch saves of the `last` checkpoint (with the exact position in the epoch), besides
    # the one at every epoch end; whichever comes first. 0 turns either off.
    checkpoint_minutes: float = 30.0  # minutes of training between saves
    checkpoint_every: int = 0  # updates between saves (at updates N, 2N, ...)


_CHOICES = {
    "data.short_video": ("loop", "pad"),
    "data.sampling": ("dense", "segment"),
    "data.train_crop": ("random_resized", "center"),
    "data.on_error": ("skip", "raise"),
    "data.test_crops": (1, 3),
    "data.val_crops": (1, 3),
    "optim.name": ("sgd", "adamw"),
    "precision": ("fp32", "fp16", "bf16"),
    "device": ("auto", "cpu", "cuda"),
}
_AT_LEAST = {
    "data.clip_len": 1,
    "data.frame_interval": 1,
    "data.train_size": 1,
    "data.test_short_side": 1,
    "data.test_crop_size": 1,
    "data.test_clips": 1,
    "data.val_clips": 1,
    "data.batch_size": 1,
    "data.val_batch_size": 1,
    "data.num_workers": 0,
    "data.mixup": 0,
    "data.cutmix": 0,
    "optim.epochs": 1,
    "optim.accumulate": 1,
    "optim.lr": 0,
    "optim.warmup_epochs": 0,
    "optim.min_lr": 0,
    "optim.offset_lr_scale": 0,
    "optim.weight_decay": 0,
    "eval_every": 0,
    "log_every": 1,
    "checkpoint_minutes": 0,
    "checkpoint_every": 0,
}


def _get(config: DictConfig, key: str):
    return OmegaConf.select(config, key)


def validate(config: DictConfig, source: str = "config") -> None:
    """Check choices and ranges the types alone do not catch."""
    for key, choices in _CHOICES.items():
        if _get(config, key) not in choices:
            raise ConfigError(
                f"{source}: {key} must be one of {choices}, got {_get(config, key)!r}"
            )
    for key, minimum in _AT_LEAST.items():
        value = _get(config, key)
        if not math.isfinite(value) or value < minimum:
            raise ConfigError(f"{source}: {key} must be >= {minimum}, got {value!r}")
    if not 0 <= config.optim.label_smoothing < 1:
        raise ConfigError(f"{source}: optim.label_smoothing must be in [0, 1)")
    for key in ("data.random_erasing", "data.mix_prob", "data.mix_switch_prob"):
        if not 0 <= _get(config, key) <= 1:
            raise ConfigError(f"{source}: {key} must be in [0, 1], got {_get(config, key)!r}")
    _check_rand_augment(config.data.rand_augment, source)
    check_lr_scales(config, source)
    if config.data.test_crop_size > config.data.test_short_side:
        raise ConfigError(f"{source}: data.test_crop_size must be <= data.test_short_side")
    for split in ("train", "val"):
        dataset = config.data[split]
        if dataset is not None and dataset.format not in FORMATS:
            raise ConfigError(
                f"{source}: data.{split}.format must be one of {FORMATS}, got {dataset.format!r}"
            )


def _check_rand_augment(settings, source: str) -> None:
    if settings is None:
        return
    if settings.ops not in RAND_AUGMENT_OPS:
        raise ConfigError(
            f"{source}: data.rand_augment.ops must be one of {RAND_AUGMENT_OPS}, "
            f"got {settings.ops!r}"
        )
    if settings.n < 1 or settings.levels < 1:
        raise ConfigError(f"{source}: data.rand_augment.n and .levels must be >= 1")
    if not 0 <= settings.m <= settings.levels:
        raise ConfigError(
            f"{source}: data.rand_augment.m must be in [0, levels={settings.levels}], "
            f"got {settings.m!r}"
        )


def check_lr_scales(config: DictConfig, source: str = "config") -> dict[str, float]:
    """``optim.lr_scales`` as an ordered ``{pattern: scale}``, each scale a finite number >= 0."""
    scales = {}
    for pattern, scale in config.optim.lr_scales.items():
        number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
        if not number or not math.isfinite(scale) or scale < 0:
            hint = ""
            if OmegaConf.is_dict(scale):
                hint = (
                    " (a pattern with dots given as a dotted key on the command line is split at "
                    "its dots: write optim.lr_scales='{\"head.*\": 1.0}' or put it in the YAML)"
                )
            raise ConfigError(
                f"{source}: optim.lr_scales[{str(pattern)!r}] must be a finite number >= 0, "
                f"got {scale!r}{hint}"
            )
        scales[str(pattern)] = float(scale)
    return scales


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides; validated."""
    source = str(path) if path else "config"
    try:
        config = OmegaConf.structured(TrainConfig)
        if path is not None:
            if not Path(path).is_file():
                raise ConfigError(f"config file not found: {path}")
            config = OmegaConf.merge(config, _read_yaml(Path(path)))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"overrides must be key=value, got {bad[0]!r}")
            config = OmegaConf.merge(config, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as error:
        raise ConfigError(f"{source}: {_describe(error)}") from None
    validate(config, source)
    if config.data.train is not None and OmegaConf.is_missing(config.data.train, "root"):
        raise ConfigError(f"{source}: data.train.root is required")
    return config


def _read_yaml(path: Path) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(error)}") from None


def _describe(error: OmegaConfBaseException) -> str:
    """OmegaConf's message in one line, naming the full key."""
    message = str(error).splitlines()[0]
    key = getattr(error, "full_key", None)
    if key and key not in message:
        message = f"{key}: {message}"
    return message


def dataset_spec(config: DictConfig, split: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``data.<split>``."""
    dataset = config.data[split]
    if dataset is None:
        raise ConfigError(f"the config has no data.{split} dataset")
    if OmegaConf.is_missing(dataset, "root"):
        raise ConfigError(f"data.{split}.root is required")
    fields = {f.name for f in dataclasses.fields(DatasetSpec)}
    return DatasetSpec(**{k: v for k, v in OmegaConf.to_container(dataset).items() if k in fields})


def to_yaml(config: DictConfig) -> str:
    """The config as YAML, interpolations resolved: what a run folder and a checkpoint keep."""
    return OmegaConf.to_yaml(config, resolve=True)


def from_yaml(text: str, source: str = "config") -> DictConfig:
    """A config stored in a checkpoint, merged onto today's defaults (new keys get defaults).

    It is read as plain data: YAML tags that would build Python objects are refused, and
    ``${...}`` in a value is kept as text, never resolved (so a checkpoint cannot read
    environment variables or call resolvers). Errors are :class:`ConfigError` naming
    ``source``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {yaml_problem(error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return OmegaConf.merge(OmegaConf.structured(TrainConfig), _literal(data))
    except OmegaConfBaseException as error:
        raise ConfigError(f"{source}: {_describe(error)}") from None


def _literal(value):
    """``value`` with every string escaped so that OmegaConf reads it as the text it is: a run
    of ``k`` backslashes before ``${`` becomes ``2k + 1`` of them (OmegaConf's escape)."""
    if isinstance(value, dict):
        return {key: _literal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_literal(item) for item in value]
    if isinstance(value, str):
        return re.sub(r"(\\*)\$\{", lambda match: match[1] * 2 + "\\${", value)
    return value
