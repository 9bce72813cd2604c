"""Model registry: ``@register_model`` builders, ``create_model`` and ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from sifa.models.errors import CheckpointError
from sifa.models.hub import open_model_folder


@dataclass(frozen=True)
class ModelEntry:
    """A registered builder and what is known about the model it builds.

    ``paper`` holds the paper's numbers for the model where it reports them, e.g.
    ``{"gmacs": {16: 25, 32: 51}, "kinetics400_top1": {16: 77.4}}`` (frames -> value).
    """

    name: str
    builder: Callable[..., nn.Module]
    paper: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def switches(self) -> dict[str, Any]:
        """Keyword arguments the builder takes, with their defaults."""
        return {
            name: param.default
            for name, param in inspect.signature(self.builder).parameters.items()
        }


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    builder: Callable[..., nn.Module],
    *,
    name: str | None = None,
    paper: dict[str, Any] | None = None,
    note: str,
) -> Callable[..., nn.Module]:
    """Register ``builder`` (keyword switches only) as ``name`` (default: its ``__name__``);
    ``note`` is the one-line description ``sifa models`` prints."""
    name = name or builder.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    if not note.strip():
        raise ValueError(f"model {name!r} needs a note: the line `sifa models` prints")
    _REGISTRY[name] = ModelEntry(name, builder, dict(paper or {}), note)
    return builder


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching a shell-style ``pattern``."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; a ``ValueError`` lists the close names otherwise."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}{hint} Registered models: {', '.join(list_models())}"
        )
    return _REGISTRY[name]


def create_model(name: str, *, pretrained: str | Path | None = None, **switches: Any) -> nn.Module:
    """Build the registered model ``name`` with the given switches (``num_classes=...`` etc.).

    An unknown switch is a ``TypeError`` that names it and lists the model's switches.

    ``pretrained``: a model folder (what ``sifa publish`` writes) or ``hf-hub:ORG/NAME[@REVISION]``
    (see :mod:`sifa.models.hub`) whose weights the model gets. The model and its switches are
    the folder's: it must hold ``name``, and a switch given here must agree with the folder's
    (else a :class:`~sifa.models.weights.CheckpointError` names it). Like any new model, the
    result is in training mode: call ``.eval()`` for inference.
    """
    entry = model_entry(name)
    known = entry.switches()
    unknown = sorted(set(switches) - set(known))
    if unknown:
        raise TypeError(
            f"{name} has no switch {', '.join(map(repr, unknown))}; "
            f"its switches are: {', '.join(known)}"
        )
    if pretrained is None:
        return entry.builder(**switches)
    return _create_pretrained(entry, pretrained, switches)


def _create_pretrained(
    entry: ModelEntry, source: str | Path, switches: dict[str, Any]
) -> nn.Module:
    folder = open_model_folder(source)
    if folder.model_name != entry.name:
        raise CheckpointError(
            f"{source} holds a {folder.model_name}, not a {entry.name}: "
            f"create_model({folder.model_name!r}, pretrained=...)"
        )
    built_with = {**entry.switches(), **folder.switches, "num_classes": folder.num_classes}
    for key, value in switches.items():
        if _comparable(value) != _comparable(built_with[key]):
            raise CheckpointError(
                f"switch {key}={value!r} disagrees with {source}, whose {entry.name} has "
                f"{key}={built_with[key]!r}: the model is built as the folder says, leave "
                f"{key} out"
            )
    model = entry.builder(**folder.switches, num_classes=folder.num_classes)
    folder.load_into(model)
    return model


def _comparable(value: Any) -> Any:
    """Tuples as lists: a switch read back from JSON is a list where the default is a tuple."""
    if isinstance(value, (tuple, list)):
        return [_comparable(item) for item in value]
    return value
