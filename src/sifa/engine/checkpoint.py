"""Checkpoints: weights as ``.safetensors``, training state in a ``weights_only`` torch file.

A checkpoint ``NAME`` in a folder is two files written atomically (temporary file, then
``os.replace``):

- ``NAME.safetensors``: the model's weights, with the run's config (YAML) and class names in
  the file's metadata, so that it alone is enough to evaluate or predict;
- ``NAME.state.pt``: optimiser, scheduler, grad scaler, RNG states and the position in training
  (epoch, update, best score), loaded with ``weights_only=True``: a file that would need
  pickled code to load is refused.

Both carry the update count, so a state file from another moment than the weights (a crash
between the two renames) is detected instead of silently resumed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sifa.files import replace_atomically
from sifa.models.weights import CheckpointError, load_torch_file

FORMAT = "sifa-checkpoint-1"


def rng_state() -> dict:
    """Every RNG the training loop draws from, in types ``weights_only`` loading accepts."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(
        ("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
         numpy["has_gauss"], numpy["gauss"])
    )  # fmt: skip
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: str | Path,
    name: str,
    model: torch.nn.Module,
    *,
    config_yaml: str,
    class_names: list[str],
    update: int,
    training_state: dict | None = None,
) -> Path:
    """Write ``NAME.safetensors`` (and ``NAME.state.pt`` when ``training_state`` is given)."""
    folder = Path(folder)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "config": config_yaml,
        "class_names": json.dumps(class_names),
        "update": str(update),
    }
    if training_state is not None:
        state = dict(training_state, update=update)
        replace_atomically(folder / f"{name}.state.pt", lambda p: torch.save(state, p))
    path = folder / f"{name}.safetensors"
    replace_atomically(path, lambda p: save_file(weights, str(p), metadata=metadata))
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """The weights file of ``path``: a ``.safetensors`` file, a checkpoint name without suffix,
    or a run folder (its ``checkpoints/best``, else ``checkpoints/last``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in ("checkpoints/best", "checkpoints/last", "best", "last"):
            weights = path / f"{candidate}.safetensors"
            if weights.is_file():
                return weights
        raise CheckpointError(f"no checkpoint (best or last .safetensors) in {path}")
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Weights and metadata of a checkpoint (no pickle involved)."""
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            weights = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a sifa training checkpoint (no {FORMAT!r} metadata); for ImageNet "
            "weights use model.pretrained"
        )
    return weights, metadata


def load_training_state(weights_path: str | Path) -> dict:
    """The ``.state.pt`` beside a checkpoint's weights, checked to be from the same update."""
    weights_path = resolve_checkpoint(weights_path)
    path = weights_path.with_name(weights_path.name.removesuffix(".safetensors") + ".state.pt")
    if not path.is_file():
        raise CheckpointError(f"training state not found: {path} (needed to resume)")
    state = load_torch_file(path, "it was not written by sifa or has been tampered with")
    _, metadata = load_weights(weights_path)
    if str(state.get("update")) != metadata.get("update"):
        raise CheckpointError(
            f"{path} (update {state.get('update')}) does not belong to {weights_path} (update "
            f"{metadata.get('update')}): the run stopped while writing them"
        )
    return state


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu"):
    """``(model, config, class_names)`` of a training checkpoint: the model rebuilt from the
    config stored in the weights file, its weights loaded, in eval mode on ``device``."""
    from omegaconf import OmegaConf

    from sifa.engine.config import from_yaml
    from sifa.models import create_model

    path = resolve_checkpoint(checkpoint)
    weights, metadata = load_weights(path)
    config = from_yaml(metadata["config"])
    class_names = json.loads(metadata["class_names"])
    switches = OmegaConf.to_container(config.model.switches, resolve=True)
    model = create_model(config.model.name, num_classes=len(class_names), **switches)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit {config.model.name}: {error}") from error
    return model.to(device).eval(), config, class_names
