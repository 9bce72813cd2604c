"""Checkpoints: weights as ``.safetensors``, training state in a ``weights_only`` torch file.

A checkpoint ``NAME`` in a folder is

- ``NAME.safetensors``: the model's weights, with the run's config (YAML, interpolations
  resolved) and class names in the file's metadata, so that it alone is enough to evaluate or
  predict;
- ``NAME.state-UPDATE.pt`` (only for checkpoints that can be resumed): optimiser, scheduler,
  grad scaler, RNG states and the position in training (epoch, batch, update, best score),
  loaded with ``weights_only=True``: a file that would need pickled code to load is refused.
  The weights file's metadata names it.

Saving is one atomic step. The state file is written first under its own new name, then the
weights file replaces the old one with a single ``os.replace``: that rename commits the new
pair; only then is the previous state file removed. A kill, a crash or a failed write at any
moment leaves the previous pair or the new one, both complete. Temporary files of killed
writes and state files that no weights file names are removed by the next save or resume.
Files are flushed to the disk (``fsync``) before they are renamed into place.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import DictConfig
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from sifa.files import remove_stale_temporaries, replace_atomically
from sifa.models.hub import (
    CONFIG_FILE,
    MODEL_FORMAT,
    WEIGHTS_FILE,
    download_model_folder,
    is_hub_id,
    is_model_folder,
    model_folder_of_weights,
    read_model_folder,
)
from sifa.models.weights import CheckpointError, load_torch_file

FORMAT = "sifa-checkpoint-1"

# Test hook: SIFA_TEST_KILL_AT=NAME:STAGE[@N] kills this process with SIGKILL the N-th time (1st
# by default) the save of checkpoint NAME reaches STAGE, to test what a kill leaves behind.
KILL_AT_VARIABLE = "SIFA_TEST_KILL_AT"
SAVE_STAGES = ("state-written", "state-placed", "weights-written", "committed")
_stages_reached: Counter = Counter()


def _reached(name: str, stage: str) -> None:
    target = os.environ.get(KILL_AT_VARIABLE)
    if not target:
        return
    where, _, count = target.partition("@")
    if where != f"{name}:{stage}":
        return
    _stages_reached[where] += 1
    if _stages_reached[where] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


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
    """Write checkpoint ``NAME`` (its training state too when ``training_state`` is given) in
    one atomic step (see the module's docstring); returns the weights file. A failed write
    raises :class:`CheckpointError` naming the file and the cause, and leaves the previous
    checkpoint as it was."""
    folder = Path(folder)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "config": config_yaml,
        "class_names": json.dumps(class_names),
        "update": str(update),
    }
    path = folder / f"{name}.safetensors"
    had_previous = path.is_file()
    state_path = folder / f"{name}.state-{update:08d}.pt"
    writing = path
    try:
        if training_state is not None:
            writing = state_path
            metadata["state_file"] = writing.name
            state = dict(training_state, update=update)
            _write(writing, lambda handle: torch.save(state, handle), name, "state")
            _reached(name, "state-placed")
            writing = path
        _write(path, lambda handle: handle.write(safetensors_bytes(weights, metadata)), name,
               "weights")  # fmt: skip
    except OSError as error:
        remove_leftovers(folder, name)
        if not path.is_file():  # no weights file names the new state file: it is an orphan
            state_path.unlink(missing_ok=True)
        cause = error.strerror or str(error)
        if error.errno in errno.errorcode:
            cause += f" ({errno.errorcode[error.errno]})"
        if had_previous:
            kept = f"the previous {name} checkpoint is kept"
        else:
            kept = f"no {name} checkpoint was saved"
        raise CheckpointError(f"cannot write {writing}: {cause}; {kept}") from error
    _reached(name, "committed")
    remove_leftovers(folder, name)  # the previous state file, and what killed saves left
    return path


def _write(path: Path, write, name: str, part: str) -> None:
    """``write(handle)`` into ``path``, atomically and durably. Writing through a Python file
    object makes a full disk an ``OSError`` that says so (``torch.save`` to a path reports it
    as an opaque C++ stream error, and to a file object as a zip writer error raised while
    handling the ``OSError``, which is raised instead)."""

    def write_file(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            try:
                write(handle)
            except RuntimeError as error:
                # torch.save reports a failed write as a RuntimeError of its zip writer
                # ("unexpected pos ...") raised while the OSError is handled: raise the cause.
                cause = _os_error_behind(error)
                if cause is None:
                    raise
                raise cause from None

    replace_atomically(
        path, write_file, durable=True, before_replace=lambda: _reached(name, f"{part}-written")
    )


def _os_error_behind(error: BaseException) -> OSError | None:
    """The first ``OSError`` in the chain of exceptions that led to ``error``, if any."""
    seen = error.__cause__ or error.__context__
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen


def remove_leftovers(folder: str | Path, name: str) -> list[Path]:
    """Remove what interrupted saves of checkpoint ``NAME`` left in ``folder``: temporary files
    of writers that are gone, and state files that ``NAME.safetensors`` does not name (kept
    all when that file is missing or unreadable). Returns the removed paths."""
    folder = Path(folder)

    def belongs(target: str) -> bool:
        return target == f"{name}.safetensors" or target.startswith(f"{name}.state")

    removed = remove_stale_temporaries(folder, belongs)
    weights = folder / f"{name}.safetensors"
    if not weights.is_file():
        return removed
    try:
        keep = _state_file_name(weights, read_metadata(weights))
    except CheckpointError:
        return removed
    for candidate in [folder / f"{name}.state.pt", *folder.glob(f"{name}.state-*.pt")]:
        if candidate.name != keep and candidate.is_file():
            candidate.unlink()
            removed.append(candidate)
    return removed


def _state_file_name(weights_path: Path, metadata: dict[str, str]) -> str:
    """The state file a weights file belongs with (``NAME.state.pt`` for files written before
    state files carried their update)."""
    legacy = weights_path.name.removesuffix(".safetensors") + ".state.pt"
    name = metadata.get("state_file", legacy)
    if Path(name).name != name:
        raise CheckpointError(f"{weights_path} names a state file outside its folder: {name!r}")
    return name


def resolve_checkpoint(path: str | Path) -> Path:
    """The weights file of ``path``: a ``.safetensors`` file, a checkpoint name without suffix,
    a run folder (its ``checkpoints/best``, else ``checkpoints/last``), a model folder (its
    ``model.safetensors``; see :mod:`sifa.models.hub`) or ``hf-hub:ORG/NAME[@REVISION]`` (the
    ``model.safetensors`` of that model folder in huggingface_hub's cache, downloaded if
    needed)."""
    if is_hub_id(path):
        return download_model_folder(path) / WEIGHTS_FILE
    path = Path(path)
    if path.is_dir():
        if is_model_folder(path):
            return read_model_folder(path).weights_path
        for candidate in ("checkpoints/best", "checkpoints/last", "best", "last"):
            weights = path / f"{candidate}.safetensors"
            if weights.is_file():
                return weights
        raise CheckpointError(
            f"no checkpoint (best or last .safetensors) in {path}, and it is no model folder "
            f"({CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        return path
    weights = path.with_name(path.name + ".safetensors")
    if not weights.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path} is neither a run folder nor a checkpoint (there is "
            f"no {weights.name} beside it either)"
        )
    return weights


def default_output_folder(weights_path: str | Path) -> Path:
    """Where commands write by default for a resolved checkpoint (``sifa eval``: its
    ``eval/``, ``sifa export``: its ``export/``): the run folder of a run's checkpoint (the
    folder above the checkpoint's own), and the current folder for a model folder, which stays
    as it was published (or as the Hub cache holds it)."""
    weights_path = Path(weights_path)
    if weights_path.name == WEIGHTS_FILE and is_model_folder(weights_path.parent):
        return Path.cwd()
    return weights_path.parent.parent


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a sifa checkpoint's weights file (no tensor is read)."""
    return _read(Path(path), tensors=False)[1]


def _read(path: Path, *, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (none unless ``tensors``) and metadata of a sifa checkpoint's weights file,
    opened once. A model folder's ``model.safetensors`` gets the metadata a checkpoint would
    have (its config as YAML, its class names as JSON) from the folder's ``config.json``."""
    folder = model_folder_of_weights(path)
    if folder is not None:
        metadata = {
            "format": MODEL_FORMAT,
            "config": yaml.safe_dump(folder.config, sort_keys=False),
            "class_names": json.dumps(folder.class_names),
        }
        return (folder.load_weights() if tensors else {}), metadata
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            keys = handle.keys() if tensors and metadata.get("format") == FORMAT else []
            weights = {key: handle.get_tensor(key) for key in keys}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a sifa training checkpoint (no {FORMAT!r} metadata); for ImageNet "
            "weights use model.pretrained"
        )
    return weights, metadata


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Weights and metadata of a checkpoint (no pickle involved)."""
    return _read(resolve_checkpoint(path), tensors=True)


def load_training_state(weights_path: str | Path) -> dict:
    """The training state that belongs with a checkpoint's weights, checked to be from the
    same update."""
    weights_path = resolve_checkpoint(weights_path)
    metadata = read_metadata(weights_path)
    path = weights_path.with_name(_state_file_name(weights_path, metadata))
    if not path.is_file():
        raise CheckpointError(f"training state not found: {path} (needed to resume)")
    state = load_torch_file(path, "it was not written by sifa or has been tampered with")
    if str(state.get("update")) != metadata.get("update"):
        raise CheckpointError(
            f"{path} (update {state.get('update')}) does not belong to {weights_path} (update "
            f"{metadata.get('update')})"
        )
    return state


@dataclass(frozen=True)
class CheckpointContents:
    """What a checkpoint (or a model folder) holds: its weights, config and class names."""

    path: Path  # the weights file
    weights: dict[str, torch.Tensor]
    config: DictConfig
    class_names: list[str]
    update: int | None  # the training update it was saved at (None for a model folder)


def read_checkpoint(checkpoint: str | Path) -> CheckpointContents:
    """The weights, config and class names of ``checkpoint`` (anything
    :func:`resolve_checkpoint` takes), checked to be readable; no model is built."""
    from sifa.engine.config import ConfigError, from_yaml

    path = resolve_checkpoint(checkpoint)
    weights, metadata = load_weights(path)
    try:
        config = from_yaml(metadata["config"], source=f"the config stored in {path}")
        class_names = json.loads(metadata["class_names"])
    except KeyError as error:
        raise CheckpointError(f"{path} has no {error} in its metadata") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: its class names are not JSON: {error}") from None
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    update = metadata.get("update")
    return CheckpointContents(path, weights, config, class_names, int(update) if update else None)


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu"):
    """``(model, config, class_names)`` of a training checkpoint or a model folder: the model
    rebuilt from the config stored with the weights, its weights loaded, in eval mode on
    ``device``."""
    from omegaconf import OmegaConf

    from sifa.models import create_model

    contents = read_checkpoint(checkpoint)
    config = contents.config
    switches = OmegaConf.to_container(config.model.switches, resolve=True)
    model = create_model(config.model.name, num_classes=len(contents.class_names), **switches)
    try:
        model.load_state_dict(contents.weights)
    except RuntimeError as error:
        raise CheckpointError(
            f"{contents.path} does not fit {config.model.name}: {error}"
        ) from error
    return model.to(device).eval(), config, contents.class_names
