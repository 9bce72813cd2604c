"""Classification metrics for video recognition, and the PNG figures of training and evaluation.

Scores and labels may be torch tensors or numpy arrays. Accuracies are fractions in [0, 1];
the figures show them in %. Matplotlib is imported only when a figure is drawn, through its
object API on the Agg canvas (no ``pyplot``), so drawing is thread-safe and needs no display.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_MAX_ANNOTATED_CLASSES = 12  # cell values printed up to this many classes
_MAX_LABELLED_CLASSES = 50  # class-name tick labels up to this many classes
_DPI = 100

# (record key, panel title, y label, factor from the recorded value to the plotted one)
_CURVE_PANELS = (
    ("train_loss", "Training loss", "loss", 1.0),
    ("val_top1", "Validation top-1", "top-1 accuracy (%)", 100.0),
)


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu()
    return np.asarray(value)


def _shape_error(name: str, expected: str, given: tuple[int, ...]) -> ValueError:
    return ValueError(f"{name} must have shape {expected}, got {tuple(given)}")


def _class_indices(value: Any, name: str, length: int | None, num_classes: int) -> np.ndarray:
    """Checks a 1-D integer array of class indices in [0, num_classes), of ``length`` if given."""
    array = _as_numpy(value)
    expected = "(N,)" if length is None else f"({length},)"
    if array.ndim != 1 or (length is not None and array.shape[0] != length):
        raise _shape_error(name, expected, array.shape)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got values in [{array.min()}, {array.max()}]"
        )
    return array


def _scores_and_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = _as_numpy(scores)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise _shape_error("scores", "(N, C) with C >= 1", scores.shape)
    if scores.shape[0] == 0:
        raise ValueError("scores is empty: shape (0, C); need at least one video (N >= 1)")
    labels = _class_indices(labels, "labels", scores.shape[0], scores.shape[1])
    return scores.astype(np.float64), labels


def _square_confusion(confusion: Any) -> np.ndarray:
    confusion = _as_numpy(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.size == 0:
        raise _shape_error("confusion", "(C, C) with C >= 1", confusion.shape)
    return confusion


def _label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank (0 = highest score) of each row's label, shape ``(N,)``; ties go to the lower index."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.argmax(order == labels[:, None], axis=1)


def _accuracies_at(ranks: np.ndarray, ks: Iterable[int]) -> dict[int, float]:
    accuracies = {}
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks must hold integers >= 1, got {k!r}")
        accuracies[int(k)] = float(np.mean(ranks < k))  # a rank is < C, so k > C counts as C
    return accuracies


def topk_accuracy(scores: Any, labels: Any, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Fraction of videos whose label is among their k highest scores, for each k in ``ks``.

    ``scores`` ``(N, C)``, ``labels`` ``(N,)`` integers in [0, C). A k larger than C counts as C;
    among equal scores the lower class index ranks first.
    """
    scores, labels = _scores_and_labels(scores, labels)
    return _accuracies_at(_label_ranks(scores, labels), ks)


def confusion_matrix(predictions: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs: int64 ``(C, C)``, rows true class, columns predicted.

    ``predictions`` and ``labels`` ``(N,)`` integers in [0, num_classes).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    labels = _class_indices(labels, "labels", None, num_classes)
    predictions = _class_indices(predictions, "predictions", labels.shape[0], num_classes)
    pairs = labels * num_classes + predictions
    counts = np.bincount(pairs, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def per_class_accuracy(confusion: Any) -> np.ndarray:
    """Fraction of each true class predicted right, float ``(C,)``; NaN where a class has none."""
    confusion = _square_confusion(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    accuracy = np.full(support.shape, np.nan)
    np.divide(np.diag(confusion), support, out=accuracy, where=support > 0)
    return accuracy


def mean_class_accuracy(confusion: Any) -> float:
    """Mean of the per-class accuracies over the classes that have videos."""
    accuracy = per_class_accuracy(confusion)
    present = accuracy[~np.isnan(accuracy)]
    if present.size == 0:
        raise ValueError("confusion holds no videos: the mean class accuracy is undefined")
    return float(present.mean())


def classification_report(scores: Any, labels: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Evaluation summary as plain JSON-serialisable Python values; accuracies are fractions.

    ``scores`` ``(N, C)``, ``labels`` ``(N,)``, ``class_names`` C distinct names. Keys:
    ``num_videos``, ``top1``, ``top5``, ``mean_class_accuracy``, ``per_class_accuracy``
    (name -> accuracy, None for a class with no videos) and ``confusion_matrix`` (C lists of C
    counts, rows true class).
    """
    scores, labels = _scores_and_labels(scores, labels)
    num_classes = scores.shape[1]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise _shape_error("class_names", f"({num_classes},)", (len(names),))
    if len(set(names)) != len(names):
        raise ValueError("class_names must be distinct")
    ranks = _label_ranks(scores, labels)
    accuracies = _accuracies_at(ranks, (1, 5))
    predictions = np.argmax(scores, axis=1)  # the first maximum: the same tie rule as the ranks
    confusion = confusion_matrix(predictions, labels, num_classes)
    per_class = per_class_accuracy(confusion)
    return {
        "num_videos": int(labels.shape[0]),
        "top1": accuracies[1],
        "top5": accuracies[5],
        "mean_class_accuracy": mean_class_accuracy(confusion),
        "per_class_accuracy": {
            name: None if np.isnan(value) else float(value)
            for name, value in zip(names, per_class, strict=True)
        },
        "confusion_matrix": confusion.tolist(),
    }


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Writes ``figure`` to ``path`` atomically: a temporary file in the same folder, replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name opened exclusively (rather than mkstemp) keeps the umask's permissions
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as file:
            figure.savefig(file, format="png", dpi=_DPI, bbox_inches="tight")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return path


def plot_confusion_matrix(
    confusion: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    normalize: bool = True,
) -> Path:
    """Draws ``confusion`` ``(C, C)`` (rows true class) as a PNG heat map at ``path``.

    With ``normalize`` each row shows fractions of its true class (a row with no videos stays
    blank). Cell values are printed up to 12 classes, class names on the axes up to 50.
    """
    confusion = _square_confusion(confusion).astype(np.float64)
    num_classes = confusion.shape[0]
    if len(class_names) != num_classes:
        raise _shape_error("class_names", f"({num_classes},)", (len(class_names),))
    if normalize:
        support = confusion.sum(axis=1, keepdims=True)
        values = np.full(confusion.shape, np.nan)
        np.divide(confusion, support, out=values, where=support > 0)
        vmax, colour_label, text_format = 1.0, "fraction of the true class", "{:.2f}"
    else:
        values = confusion
        vmax, colour_label, text_format = max(float(confusion.max()), 1.0), "videos", "{:.0f}"

    labelled = num_classes <= _MAX_LABELLED_CLASSES
    side = max(6.0, 0.3 * num_classes + 3.0) if labelled else 10.0
    figure = new_figure(side + 1.5, side)  # the extra width holds the colour bar
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    figure.colorbar(image, ax=axes, label=colour_label, shrink=0.8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if title is not None:
        axes.set_title(title)

    if labelled:
        ticks = np.arange(num_classes)
        names = [str(name) for name in class_names]
        axes.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
        axes.set_yticks(ticks, names)
    else:
        axes.set_xticks([])
        axes.set_yticks([])

    if num_classes <= _MAX_ANNOTATED_CLASSES:
        for row, column in np.ndindex(values.shape):
            value = values[row, column]
            if np.isnan(value):
                continue
            colour = "white" if value > 0.5 * vmax else "black"  # readable on dark cells
            axes.text(column, row, text_format.format(value), ha="center", va="center",
                      color=colour, fontsize=9)  # fmt: skip
    return save_png(figure, path)


def _curve(records: Sequence[Mapping[str, Any]], key: str, run: str) -> tuple[list, list]:
    """(epochs, values) of the records of ``run`` that have ``key``, in epoch order."""
    points = []
    for record in records:
        if record.get(key) is None:
            continue
        if "epoch" not in record:
            raise ValueError(f"histories[{run!r}] has a record without 'epoch': {dict(record)}")
        points.append((record["epoch"], float(record[key])))
    points.sort(key=lambda point: point[0])
    return [epoch for epoch, _ in points], [value for _, value in points]


def plot_training_curves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    groups: Mapping[str, str] | None = None,
) -> Path:
    """Draws training loss and validation top-1 (%) against the epoch as a PNG at ``path``.

    ``histories`` maps a run name to its per-epoch records: dicts with ``epoch`` and any of
    ``train_loss``, ``val_top1`` (a fraction), ``train_top1``, ``lr``. One line per run that has
    the panel's key; a panel no run has data for is left out. ``groups`` maps run names to a
    group (the same model trained with several seeds): a group's runs share a colour and one
    legend entry, the group's name.
    """
    group_of = {run: (groups or {}).get(run, run) for run in histories}
    colour_of = {group: f"C{i % 10}" for i, group in enumerate(dict.fromkeys(group_of.values()))}
    panels = []
    for key, panel_title, y_label, factor in _CURVE_PANELS:
        lines, labelled = [], set()
        for run, records in histories.items():
            epochs, values = _curve(records, key, run)
            if epochs:
                # colours follow the group's position, so it keeps its colour in every panel
                group = group_of[run]
                label = group if group not in labelled else None
                labelled.add(group)
                lines.append((label, colour_of[group], epochs, [factor * v for v in values]))
        if lines:
            panels.append((panel_title, y_label, lines))
    if not panels:
        keys = ", ".join(key for key, *_ in _CURVE_PANELS)
        raise ValueError(f"histories has nothing to draw: no record holds any of {keys}")

    from matplotlib.ticker import MaxNLocator

    figure = new_figure(6.0 * len(panels), 4.5)
    for position, (panel_title, y_label, lines) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), position)
        for label, colour, epochs, values in lines:
            axes.plot(epochs, values, marker="o", markersize=3, color=colour, label=label,
                      alpha=0.6 if groups else 1.0)  # fmt: skip
        axes.set_title(panel_title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(y_label)
        axes.grid(True, alpha=0.3)
        axes.legend()
    if title is not None:
        figure.suptitle(title)
    return save_png(figure, path)
