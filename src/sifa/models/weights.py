"""Reading weight files safely, and inflating ImageNet 2D ResNet and Swin checkpoints into the
video models."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sifa.models.errors import CheckpointError

_CONTAINER_KEYS = ("state_dict", "model", "model_state", "module")


def load_torch_file(path: Path, hint: str):
    """``torch.load`` with ``weights_only=True``: a file that needs pickled code is refused
    (``hint`` says what to do instead), an unreadable one named."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} needs pickled code to load, which is refused (weights_only=True); {hint}"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable PyTorch file: {error}") from error


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt``/``.bin`` file loaded with
    ``weights_only=True`` (no pickled code runs). A state dict nested under ``state_dict`` or
    ``model`` is unwrapped and a DataParallel ``module.`` prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error
    else:
        state = load_torch_file(
            path, "save a plain state dict of tensors or a .safetensors file instead"
        )
    while isinstance(state, Mapping):
        nested = next(
            (state[k] for k in _CONTAINER_KEYS if isinstance(state.get(k), Mapping)), None
        )
        if nested is None:
            break
        state = nested
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    tensors = {
        key.removeprefix("module."): value
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
    }
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors")
    return tensors


def _source_key(key: str) -> str:
    """The 2D checkpoint key that fills a model key (the dual branch copies layer4 and fc)."""
    if key.startswith("layer4_dual."):
        return "layer4." + key.removeprefix("layer4_dual.")
    if key.startswith("fc_dual."):
        return "fc." + key.removeprefix("fc_dual.")
    return key


def _inflate_at_centre(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A 2D kernel ``(O, I, k, k)`` as ``shape`` ``(O, I, t, k, k)``: at temporal index
    ``t // 2``, zeros elsewhere."""
    inflated = value.new_zeros(shape)
    inflated[:, :, shape[2] // 2] = value
    return inflated


def _inflate(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``value`` shaped for ``target``: 2D kernels become ``1 x k x k``; the stem's ``k x k``
    kernel goes to temporal index ``t // 2`` of ``t`` with zeros elsewhere (index 2 of 4)."""
    if value.shape == target.shape:
        return value
    if (
        value.dim() == 4
        and target.dim() == 5
        and value.shape == target.shape[:2] + target.shape[3:]
    ):
        return _inflate_at_centre(value, target.shape)
    raise CheckpointError(
        f"checkpoint key {_source_key(key)!r} has shape {tuple(value.shape)}, which cannot fill "
        f"model key {key!r} of shape {tuple(target.shape)}"
    )


def inflate_resnet_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool = True
) -> list[str]:
    """Copy a 2D ResNet state dict (torchvision key layout) into a :class:`ResNet3d`.

    Kernels are inflated as :func:`_inflate` says, ``layer4``/``fc`` also fill the dual branch,
    and ``fc`` is dropped when its class count differs. Returns the model keys left as they
    were (SIFA offset convs, GC layers, a dropped classifier, ...). A shape mismatch anywhere
    else raises :class:`CheckpointError` naming the key, and so do checkpoint keys with no
    place in the model (a deeper network's checkpoint, say) unless ``strict=False``.
    """
    targets = model.state_dict()
    used, missing = set(), []
    with torch.no_grad():
        for key, target in targets.items():
            source = _source_key(key)
            if source not in state:
                missing.append(key)
                continue
            value = state[source]
            if source.startswith("fc.") and value.shape != target.shape:
                missing.append(key)  # another class count: the classifier starts fresh
                used.add(source)
                continue
            target.copy_(_inflate(key, value, target).to(target.dtype))
            used.add(source)
    unused = sorted(set(state) - used)
    if strict and unused:
        shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
        raise CheckpointError(
            f"checkpoint keys with no place in the model: {shown} (a checkpoint of another "
            "depth?); pass strict=False to ignore them"
        )
    return missing


def load_2d_resnet_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> list[str]:
    """Inflate an ImageNet 2D ResNet checkpoint file (``.pth`` or ``.safetensors``, torchvision
    key layout) into ``model``; returns the model keys it did not fill. See
    :func:`inflate_resnet_state_dict`."""
    try:
        return inflate_resnet_state_dict(model, read_state_dict(path), strict=strict)
    except CheckpointError as error:
        if str(path) in str(error):
            raise
        raise CheckpointError(f"{path}: {error}") from error


# ---------------------------------------------------------------------------------------------
# Swin Transformer.

TEMPORAL_INITS = ("center", "average")
# Buffers the Swin releases save that our model computes on the fly.
_SWIN_BUFFERS = re.compile(r"(^|\.)(relative_position_index|attn_mask)$")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def _shown(keys: list[str], limit: int = 5) -> str:
    extra = len(keys) - limit
    return ", ".join(keys[:limit]) + (f" and {extra} more" if extra > 0 else "")


def _natural(key: str) -> tuple:
    """Sort key putting ``blocks.10`` after ``blocks.9``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in key.split("."))


def _swin_key_map(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Model key -> checkpoint key for the reference (microsoft/Swin-Transformer, timm < 0.9) or
    the timm >= 0.9 key layout, told apart by the patch merging keys: the reference layout has
    them at the end of stages ``0 .. n-2`` (so ``layers.0.downsample.*`` is there), timm >= 0.9
    at the start of stages ``1 .. n-1`` (``layers.{i}.downsample.*`` is ours
    ``layers.{i-1}.downsample.*``). timm's ``head.fc.*`` is ours ``head.*``. The buffers
    ``relative_position_index`` and ``attn_mask`` are left out."""
    stages = {int(m.group(1)) for key in state if (m := _DOWNSAMPLE.match(key))}
    shift_merging = bool(stages) and 0 not in stages
    mapping: dict[str, str] = {}
    for key in state:
        if _SWIN_BUFFERS.search(key):
            continue
        target = key
        if shift_merging and (m := _DOWNSAMPLE.match(key)):
            target = f"layers.{int(m.group(1)) - 1}.downsample." + key[m.end() :]
        elif key.startswith("head.fc."):
            target = "head." + key.removeprefix("head.fc.")
        if target in mapping:
            raise CheckpointError(
                f"checkpoint keys {mapping[target]!r} and {key!r} both fill model key {target!r}"
            )
        mapping[target] = key
    return mapping


def _resize_bias_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """A relative position bias table ``((2W-1)**2, heads)`` resized to ``(size**2, heads)``,
    ``size = 2W'-1``, by bicubic interpolation of its ``(2W-1) x (2W-1)`` grid of offsets
    ``(dy, dx)`` (``align_corners=False``), as the Swin release does for another window."""
    old = round(table.shape[0] ** 0.5)
    grid = table.float().t().reshape(1, table.shape[1], old, old)
    grid = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
    return grid.reshape(table.shape[1], size * size).t()


def _swin_value(
    model_key: str, key: str, value: torch.Tensor, target: torch.Tensor, temporal_init: str
) -> torch.Tensor | None:
    """``value`` (checkpoint ``key``) shaped for ``target`` (``model_key``), or None for a
    classifier of another class count (left at init).

    - ``patch_embed.proj.weight`` ``(C, 3, p, p)`` -> ``(C, 3, t, p, p)``: ``"center"`` puts the
      kernel at temporal index ``t // 2`` with zeros elsewhere, ``"average"`` repeats it over
      the ``t`` taps divided by ``t``; both give the 2D tokens on a clip of identical frames.
    - ``relative_position_bias_table`` ``((2W-1)**2, heads)`` -> ``((2W'-1)**2, heads)``:
      :func:`_resize_bias_table`.
    """
    if value.shape == target.shape:
        return value
    if model_key.startswith("head.") and value.shape[1:] == target.shape[1:]:
        return None
    if (
        model_key == "patch_embed.proj.weight"
        and value.dim() == 4
        and target.dim() == 5
        and value.shape == target.shape[:2] + target.shape[3:]
    ):
        if temporal_init == "average":
            return value.unsqueeze(2).expand(target.shape) / target.shape[2]
        return _inflate_at_centre(value, target.shape)
    if model_key.endswith(".relative_position_bias_table") and value.dim() == 2:
        old, new = (round(n**0.5) for n in (value.shape[0], target.shape[0]))
        if (
            value.shape[1] == target.shape[1]
            and old * old == value.shape[0]
            and old % 2 == 1
            and new * new == target.shape[0]
        ):
            return _resize_bias_table(value, new)
    raise CheckpointError(
        f"checkpoint key {key!r} has shape {tuple(value.shape)}, which cannot fill model key "
        f"{model_key!r} of shape {tuple(target.shape)}"
    )


def inflate_swin_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    temporal_init: str = "center",
) -> list[str]:
    """Copy an ImageNet 2D Swin Transformer state dict into a :class:`SwinVideo`.

    Reads the reference release's key layout (microsoft/Swin-Transformer, also timm < 0.9:
    patch merging ``layers.{i}.downsample.*`` at the end of stage ``i``, classifier
    ``head.*``) and timm >= 0.9's (merging at the start of stage ``i + 1``, classifier
    ``head.fc.*``); :func:`_swin_key_map` tells them apart. The saved buffers
    ``relative_position_index`` and ``attn_mask`` are ignored (the model computes them).

    The patch embedding ``(C, 3, p, p)`` becomes ``(C, 3, t, p, p)`` as ``temporal_init``
    says (``"center"``: at index ``t // 2``, zeros elsewhere; ``"average"``: repeated over the
    ``t`` taps divided by ``t``), a ``relative_position_bias_table`` of another window size is
    interpolated bicubically, and a classifier of another class count is left at init.

    Returns the model keys left as they were, sorted (SIFA offset convs and norms, temporal
    convs, a classifier of another class count). Nothing is copied when it raises: a
    :class:`CheckpointError` for any other shape mismatch (naming the checkpoint key, the model
    key and both shapes) and, unless ``strict=False``, for checkpoint keys with no place in
    the model (a deeper variant's checkpoint); a ValueError for an unknown ``temporal_init``.
    """
    if temporal_init not in TEMPORAL_INITS:
        raise ValueError(f"temporal_init must be one of {TEMPORAL_INITS}, got {temporal_init!r}")
    mapping = _swin_key_map(state)
    targets = model.state_dict()
    updates, missing = [], []
    for model_key, target in targets.items():
        key = mapping.get(model_key)
        value = None
        if key is not None:
            value = _swin_value(model_key, key, state[key], target, temporal_init)
        if value is None:
            missing.append(model_key)
        else:
            updates.append((target, value))
    unused = sorted((key for target, key in mapping.items() if target not in targets), key=_natural)
    if strict and unused:
        raise CheckpointError(
            f"checkpoint keys with no place in the model: {_shown(unused)} (a checkpoint of "
            "another depth or variant?); pass strict=False to ignore them"
        )
    with torch.no_grad():
        for target, value in updates:
            target.copy_(value.to(target.dtype))
    return sorted(missing)


def load_2d_swin_weights(
    model: nn.Module, path: str | Path, *, strict: bool = True, temporal_init: str = "center"
) -> list[str]:
    """Inflate an ImageNet 2D Swin checkpoint file (``.pth`` or ``.safetensors``, reference or
    timm key layout) into a :class:`SwinVideo`; returns the model keys it did not fill. See
    :func:`inflate_swin_state_dict`."""
    if temporal_init not in TEMPORAL_INITS:
        raise ValueError(f"temporal_init must be one of {TEMPORAL_INITS}, got {temporal_init!r}")
    try:
        return inflate_swin_state_dict(
            model, read_state_dict(path), strict=strict, temporal_init=temporal_init
        )
    except CheckpointError as error:
        if str(path) in str(error):
            raise
        raise CheckpointError(f"{path}: {error}") from error


def load_2d_weights(model: nn.Module, path: str | Path, **options) -> list[str]:
    """Inflate an ImageNet 2D checkpoint file into ``model``, by its class: a
    :class:`~sifa.models.resnet.ResNet3d` through :func:`load_2d_resnet_weights` (option
    ``strict``), a :class:`~sifa.models.swin.SwinVideo` through :func:`load_2d_swin_weights`
    (options ``strict``, ``temporal_init``). Returns the model keys it did not fill; any other
    model raises :class:`CheckpointError` naming its class."""
    from sifa.models.resnet import ResNet3d
    from sifa.models.swin import SwinVideo

    if isinstance(model, SwinVideo):
        return load_2d_swin_weights(model, path, **options)
    if isinstance(model, ResNet3d):
        if "temporal_init" in options:
            raise TypeError(
                "temporal_init applies to Swin models only; a ResNet3d's stem is always "
                "inflated at the centre tap"
            )
        return load_2d_resnet_weights(model, path, **options)
    raise CheckpointError(
        f"no 2D weights can be loaded into a {type(model).__name__} from {path}: only ResNet3d "
        "and SwinVideo models are supported"
    )


def classifier_keys(model: nn.Module) -> list[str]:
    """State-dict keys of ``model``'s classifiers: its ``nn.Linear`` layers with
    ``model.num_classes`` outputs (``fc`` and ``fc_dual`` of a ResNet3d, ``head`` of a Swin)."""
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == model.num_classes
    ]
    return [key for key in model.state_dict() if key.rpartition(".")[0] in names]


def load_video_weights(
    model: nn.Module, path: str | Path, *, keep_classifier: bool = True
) -> list[str]:
    """Fill ``model`` from a video checkpoint of the same architecture (a sifa run's
    ``.safetensors``, or a ``.pth`` / ``.safetensors`` state dict): fine-tuning, e.g. Something-
    Something from a Kinetics model. Returns the keys left at their initial values: the
    classifier's (:func:`classifier_keys`) when ``keep_classifier`` is false or its shape differs
    (another class count). Any other key missing from the file, extra in it, or of another shape
    raises :class:`CheckpointError` naming the file and the keys."""
    state = read_state_dict(path)
    target = model.state_dict()
    classifier = set(classifier_keys(model))
    missing = [key for key in target if key not in state and key not in classifier]
    extra = [key for key in state if key not in target]
    if missing or extra:
        parts = [f"{len(missing)} model keys missing ({_shown(missing)})"] if missing else []
        parts += [f"{len(extra)} keys the model lacks ({_shown(extra)})"] if extra else []
        raise CheckpointError(
            f"{path} is not a checkpoint of this {type(model).__name__}: {'; '.join(parts)}"
        )
    left, fill = [], {}
    for key, value in target.items():
        if key in classifier and (
            not keep_classifier or state.get(key, value).shape != value.shape
        ):
            left.append(key)
            continue
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, the model's is "
                f"{tuple(value.shape)} (another model or other switches)"
            )
        fill[key] = state[key]
    model.load_state_dict(fill, strict=False)
    return left
