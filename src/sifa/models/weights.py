"""Reading weight files safely, and inflating ImageNet 2D ResNet checkpoints into video models."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

_CONTAINER_KEYS = ("state_dict", "model", "model_state", "module")


class CheckpointError(ValueError):
    """A weight file that cannot be read or does not fit the model; the message names the file
    or the key."""


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
        depth = target.shape[2]
        inflated = value.new_zeros(target.shape)
        inflated[:, :, depth // 2] = value
        return inflated
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
