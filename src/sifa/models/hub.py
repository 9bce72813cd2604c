"""Model folders: a trained model laid out as a Hugging Face Hub model repository, read back.

A model folder (``sifa publish`` writes one) holds

- ``model.safetensors``: the weights, with the Hub's ``{"format": "pt"}`` metadata;
- ``config.json``: ``library_name: "sifa"``, the format tag (``sifa_format``), the model's
  name, switches and class names, the settings inference needs readable at a glance
  (:data:`READABLE_KEYS`), and the full run config under ``"config"``. Loading uses
  ``"config"``; the readable keys are checked against it, so that a hand-edited file that
  says one thing and does another is refused, naming the key;
- ``README.md``: the model card (not read here).

``hf-hub:ORG/NAME[@REVISION]`` names such a folder on the Hub: huggingface_hub fetches it into
its cache, and honours ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_HOME`` as it always does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sifa.models.errors import CheckpointError

MODEL_FORMAT = "sifa-model-1"
FORMAT_KEY = "sifa_format"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HUB_PREFIX = "hf-hub:"

# Each readable key of config.json, and where the run config under "config" holds it.
READABLE_KEYS = {
    "model_name": ("model", "name"),
    "switches": ("model", "switches"),
    "clip_len": ("data", "clip_len"),
    "frame_interval": ("data", "frame_interval"),
    "sampling": ("data", "sampling"),
    "test_clips": ("data", "test_clips"),
    "test_crops": ("data", "test_crops"),
    "test_crop_size": ("data", "test_crop_size"),
    "test_short_side": ("data", "test_short_side"),
    "mean": ("data", "mean"),
    "std": ("data", "std"),
}


@dataclass(frozen=True)
class ModelFolder:
    """A checked model folder: where it is, what ``config.json`` says."""

    path: Path
    config: dict[str, Any]  # the full run config: what loading uses
    class_names: list[str]

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def model_name(self) -> str:
        return self.config["model"]["name"]

    @property
    def switches(self) -> dict[str, Any]:
        return dict(self.config["model"].get("switches") or {})

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_weights(self) -> dict[str, torch.Tensor]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(self.weights_path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise CheckpointError(
                f"{self.weights_path} is not a readable safetensors file: {error}"
            ) from error

    def load_into(self, model: nn.Module) -> None:
        """Copy the folder's weights into ``model`` (every key, every shape)."""
        try:
            model.load_state_dict(self.load_weights())
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            raise CheckpointError(
                f"{self.weights_path} does not fit {self.model_name}: {first}"
            ) from error


def readable_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The readable keys of ``config.json`` (:data:`READABLE_KEYS`) taken from a run config."""
    return {key: _setting(config, where) for key, where in READABLE_KEYS.items()}


def _setting(config: dict[str, Any], where: tuple[str, ...]) -> Any:
    value = config
    for part in where:
        if not isinstance(value, dict) or part not in value:
            raise KeyError(".".join(where))
        value = value[part]
    return value


# ---------------------------------------------------------------------------------------------
# Reading a folder


def is_hub_id(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(HUB_PREFIX)


def is_model_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` carries sifa's format tag (of any
    version: :func:`read_model_folder` says what is wrong with it, if anything)."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return FORMAT_KEY in json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, TypeError, OSError):  # not JSON, or not an object
        return False


def read_model_folder(path: str | Path) -> ModelFolder:
    """The model folder at ``path``, checked: a :class:`CheckpointError` names the file and
    the key of whatever is missing, of another format or inconsistent."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{path} is not a sifa model folder: it has no {CONFIG_FILE}")
    try:
        written = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise CheckpointError(f"{config_path} is not readable JSON: {error}") from None
    if not isinstance(written, dict) or FORMAT_KEY not in written:
        raise CheckpointError(
            f"{config_path} is not a sifa model's config (no {FORMAT_KEY!r} key); sifa publish "
            "writes model folders"
        )
    if written[FORMAT_KEY] != MODEL_FORMAT:
        raise CheckpointError(
            f"{config_path} is in format {written[FORMAT_KEY]!r}, this sifa reads "
            f"{MODEL_FORMAT!r} (written by a newer sifa? upgrade it)"
        )
    config = _run_config(written, config_path)
    _check_readable_keys(written, config, config_path)
    folder = ModelFolder(path, config, _class_names(written, config_path))
    if not folder.weights_path.is_file():
        raise CheckpointError(f"{path} is a sifa model folder without its {WEIGHTS_FILE}")
    return folder


def _run_config(written: dict, config_path: Path) -> dict[str, Any]:
    config = written.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} has no run config (a mapping under 'config')")
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise CheckpointError(f"{config_path}: config.model.name is missing")
    if not isinstance(model.get("switches", {}), dict):
        raise CheckpointError(f"{config_path}: config.model.switches is not a mapping")
    return config


def _class_names(written: dict, config_path: Path) -> list[str]:
    names = written.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{config_path}: class_names must be a list of names")
    if written.get("num_classes") != len(names):
        raise CheckpointError(
            f"{config_path}: num_classes is {written.get('num_classes')!r} but class_names "
            f"lists {len(names)} classes"
        )
    return names


def _check_readable_keys(written: dict, config: dict, config_path: Path) -> None:
    """One source of truth: every readable key must say what the run config says."""
    for key, where in READABLE_KEYS.items():
        dotted = "config." + ".".join(where)
        if key not in written:
            raise CheckpointError(f"{config_path} lacks the key {key!r} (it shows {dotted})")
        try:
            expected = _setting(config, where)
        except KeyError:
            raise CheckpointError(f"{config_path} lacks {dotted}") from None
        if written[key] != expected:
            raise CheckpointError(
                f"{config_path}: {key} is {written[key]!r} but {dotted} is {expected!r}; "
                f"loading uses {dotted}, so the two must agree (was the file edited by hand?)"
            )


def model_folder_of_weights(path: str | Path) -> ModelFolder | None:
    """The model folder whose ``model.safetensors`` ``path`` is, checked; ``None`` when
    ``path`` is no model folder's weights file."""
    path = Path(path)
    if path.name != WEIGHTS_FILE or not is_model_folder(path.parent):
        return None
    return read_model_folder(path.parent)


def open_model_folder(source: str | Path) -> ModelFolder:
    """The model folder ``source`` names: a local folder, or ``hf-hub:ORG/NAME[@REVISION]``
    (fetched by huggingface_hub, or found in its cache)."""
    if is_hub_id(source):
        return read_model_folder(download_model_folder(str(source)))
    path = Path(source)
    if path.is_dir() and not is_model_folder(path):
        raise CheckpointError(
            f"{path} is not a sifa model folder (config.json and model.safetensors); a training "
            "run is loaded with sifa.engine.load_model, or made one with `sifa publish`"
        )
    if not path.exists():
        raise CheckpointError(f"model folder not found: {path}")
    return read_model_folder(path)


# ---------------------------------------------------------------------------------------------
# The Hub


def parse_hub_id(source: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME[@REVISION]`` -> ``(repo_id, revision or None)``."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id, at, revision = source.removeprefix(HUB_PREFIX).partition("@")
    if at and not revision:
        raise CheckpointError(f"{source}: no revision after '@' (hf-hub:ORG/NAME@REVISION)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise CheckpointError(
            f"{source} is not a Hub model id (hf-hub:ORG/NAME[@REVISION]): {error}"
        ) from None
    return repo_id, revision or None


def download_model_folder(source: str) -> Path:
    """The local folder of ``hf-hub:ORG/NAME[@REVISION]``: its ``config.json`` and
    ``model.safetensors``, downloaded into huggingface_hub's cache or found there. A Hub that
    cannot be reached (or ``HF_HUB_OFFLINE=1``) with nothing cached, a missing repository,
    revision or file: a one-line :class:`CheckpointError` naming ``source`` and what to do."""
    from huggingface_hub import hf_hub_download

    repo_id, revision = parse_hub_id(source)
    downloaded = {}
    for filename in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            downloaded[filename] = hf_hub_download(
                repo_id, filename, revision=revision, library_name="sifa"
            )
        except Exception as error:  # huggingface_hub's own, OSError; anything else is a bug
            problem = _hub_problem(source, repo_id, revision, filename, error)
            if problem is None:
                raise
            raise CheckpointError(problem) from error
    return Path(downloaded[CONFIG_FILE]).parent


def _hub_problem(
    source: str, repo_id: str, revision: str | None, filename: str, error: Exception
) -> str | None:
    """What went wrong fetching ``filename`` of ``source``, in one line with what to do;
    ``None`` for an error that is not huggingface_hub's or the disk's."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache = constants.HF_HUB_CACHE
    if isinstance(error, LocalEntryNotFoundError):  # nothing cached, and no Hub to ask
        if constants.HF_HUB_OFFLINE:
            return (
                f"{source} is not in the local Hub cache ({cache}) and HF_HUB_OFFLINE is set: "
                "download it once with the network on, or point HF_HUB_CACHE (or HF_HOME) at "
                "the cache that holds it; check the id"
            )
        return (
            f"could not reach the Hub ({constants.ENDPOINT}) for {source}, and it is not in the "
            f"local cache ({cache}): check the network and the id; if it is cached elsewhere, "
            "point HF_HUB_CACHE there and set HF_HUB_OFFLINE=1"
        )
    if isinstance(error, GatedRepoError):
        return f"{source}: {repo_id} is gated: accept its terms on the Hub, then `hf auth login`"
    if isinstance(error, RepositoryNotFoundError):
        return (
            f"{source}: the Hub has no model repository {repo_id} (or it is private and no "
            "token with access is set: `hf auth login`); check the id"
        )
    if isinstance(error, RevisionNotFoundError):
        return f"{source}: {repo_id} has no revision {revision!r}; check the branch, tag or commit"
    if isinstance(error, EntryNotFoundError):
        return (
            f"{source}: {repo_id} has no {filename}, so it is not a sifa model folder "
            "(`sifa publish` writes them)"
        )
    if isinstance(error, HfHubHTTPError):
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"{source}: the Hub refused {filename}: {first}"
    if isinstance(error, OSError):
        return f"{source}: could not store {filename} in the Hub cache ({cache}): {error}"
    return None
