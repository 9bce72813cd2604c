"""Multi-view evaluation: every video scored once (also across processes), views averaged.

A video that cannot be read is left out of the metrics and listed, never replaced by another
one (with ``data.on_error: raise`` it stops the evaluation instead).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from sifa.data.datasets import UnreadableVideo, VideoClipDataset
from sifa.data.loader import seed_worker
from sifa.engine import distributed
from sifa.engine.builders import autocast_for, build_eval_set
from sifa.engine.checkpoint import load_model, read_metadata, resolve_checkpoint
from sifa.engine.distributed import Distributed, ShardedSampler
from sifa.engine.metrics import classification_report, plot_confusion_matrix


@dataclass(frozen=True)
class VideoScores:
    """The result of :func:`score_videos`: the videos that were scored, in dataset order, and
    the unreadable ones that were left out."""

    scores: np.ndarray  # (N, classes): the plain average of every view's softmax
    labels: np.ndarray  # (N,)
    indices: np.ndarray  # (N,): the dataset index of each scored video, increasing
    unreadable: tuple[UnreadableVideo, ...]  # the videos left out, in dataset order


class _EvaluationItems(Dataset):
    """``(index, views, label)`` per video of ``dataset``, or its :class:`UnreadableVideo`."""

    def __init__(self, dataset: VideoClipDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset.evaluation_item(index)
        return item if isinstance(item, UnreadableVideo) else (index, *item)


def gather_unreadable(
    group: Distributed, unreadable: list[UnreadableVideo]
) -> tuple[UnreadableVideo, ...]:
    """Every process's :class:`UnreadableVideo` markers, in the processes' order, on every
    process."""
    indices, paths, reasons = distributed.gather_in_order(
        group,
        np.asarray([u.index for u in unreadable], dtype=np.int64),
        np.asarray([u.path for u in unreadable], dtype=object),
        np.asarray([u.reason for u in unreadable], dtype=object),
    )
    return tuple(
        UnreadableVideo(int(i), str(p), str(r))
        for i, p, r in zip(indices, paths, reasons, strict=True)
    )


def collate_readable(items: list) -> tuple:
    """The batch of a batch's readable items (``(indices, views, labels)`` here; None if it
    has none), and the batch's :class:`UnreadableVideo` markers."""
    unreadable = [item for item in items if isinstance(item, UnreadableVideo)]
    readable = [item for item in items if not isinstance(item, UnreadableVideo)]
    return (default_collate(readable) if readable else None), unreadable


@torch.no_grad()
def score_videos(
    model: nn.Module,
    dataset: VideoClipDataset,
    group: Distributed,
    *,
    batch_size: int,
    num_workers: int = 0,
    precision: str = "fp32",
    progress: bool = False,
) -> VideoScores:
    """Class probabilities ``(N, classes)`` (the plain average of every view's softmax) and
    labels ``(N,)`` of the videos of ``dataset``, in dataset order, on every process.

    A video that cannot be read is left out and listed in :attr:`VideoScores.unreadable`
    (with ``on_error="raise"`` its :class:`~sifa.data.decoding.VideoError` propagates); it is
    never replaced by another video, whatever ``on_error`` says. A :class:`ValueError` says so
    when no video at all can be read."""
    loader = DataLoader(
        _EvaluationItems(dataset),
        batch_size=batch_size,
        sampler=ShardedSampler(len(dataset), group.rank, group.world_size),
        num_workers=num_workers,
        collate_fn=collate_readable,
        worker_init_fn=seed_worker,
        pin_memory=group.device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    indices, scores, labels, unreadable = [], [], [], []
    bar = tqdm(loader, desc="evaluating", unit="batch", disable=not (progress and group.is_main))
    for batch, batch_unreadable in bar:
        unreadable.extend(batch_unreadable)
        if batch is None:
            continue
        batch_indices, views, batch_labels = batch
        size, count = views.shape[:2]
        with autocast_for(precision, group.device):
            logits = model(views.flatten(0, 1).to(group.device, non_blocking=True))
        probabilities = logits.float().softmax(-1).view(size, count, -1).mean(1)
        indices.append(batch_indices.numpy())
        scores.append(probabilities.cpu().numpy())
        labels.append(batch_labels.numpy())
    model.train(was_training)

    def rows(parts: list, empty: np.ndarray) -> np.ndarray:
        return np.concatenate(parts) if parts else empty

    int64 = np.zeros(0, dtype=np.int64)
    all_indices, all_scores, all_labels = distributed.gather_in_order(
        group,
        rows(indices, int64),
        rows(scores, np.zeros((0, dataset.num_classes), dtype=np.float32)),
        rows(labels, int64),
    )
    excluded = gather_unreadable(group, unreadable)
    seen = np.sort(np.concatenate([all_indices, [u.index for u in excluded]]).astype(np.int64))
    if not np.array_equal(seen, np.arange(len(dataset))):
        raise RuntimeError(f"evaluation saw {len(seen)} items for {len(dataset)} videos")
    if not len(all_indices):
        raise ValueError(
            f"none of the {len(dataset)} videos could be read, so there is nothing to score "
            f"(the first: {excluded[0].path}: {excluded[0].reason}); sifa check-data lists them"
        )
    return VideoScores(all_scores, all_labels, all_indices, excluded)


def evaluate_checkpoint(
    checkpoint: str | Path,
    config: DictConfig,
    out_dir: str | Path,
    *,
    split: str = "val",
    group: Distributed | None = None,
) -> dict:
    """``sifa eval``: score ``data.<split>`` with ``data.test_clips x data.test_crops`` views,
    write ``eval_<split>.json`` (the report), ``confusion_<split>.png`` and
    ``scores_<split>.npz`` to ``out_dir`` (by the main process), and return the report.

    ``checkpoint`` is resolved as :func:`~sifa.engine.checkpoint.resolve_checkpoint` does (a
    run folder: its ``best``, else ``last``); the report's ``checkpoint`` names the file used,
    ``checkpoint_update`` the training update it was saved at (None for a model folder),
    ``dataset`` the split's root, ``clips`` and ``crops`` the views.
    Unreadable videos are left out of the metrics: the report lists them (``num_unreadable``,
    ``unreadable``: path and reason of each). The NPZ holds ``scores``, ``labels``, ``paths``
    and ``indices`` (in the annotation list) of the scored videos, ``class_names``, and
    ``unreadable_paths`` and ``unreadable_reasons``."""
    group = group or distributed.setup(config.device)
    checkpoint = resolve_checkpoint(checkpoint)
    model, _, class_names = load_model(checkpoint, group.device)
    dataset = build_eval_set(
        config,
        split,
        clips=config.data.test_clips,
        crops=config.data.test_crops,
        class_names=class_names,
    )
    result = score_videos(
        model,
        dataset,
        group,
        batch_size=config.data.val_batch_size,
        num_workers=config.data.num_workers,
        precision=config.precision,
        progress=config.progress,
    )
    scores, labels = result.scores, result.labels
    labelled = labels >= 0
    report = classification_report(scores[labelled], labels[labelled], class_names)
    update = read_metadata(checkpoint).get("update")
    report.update(
        split=split,
        dataset=str(config.data[split].root),
        checkpoint=str(checkpoint),
        checkpoint_update=int(update) if update else None,  # which save of that name it was
        clips=config.data.test_clips,
        crops=config.data.test_crops,
        views=config.data.test_clips * config.data.test_crops,
        num_unreadable=len(result.unreadable),
        unreadable=[{"path": u.path, "reason": u.reason} for u in result.unreadable],
    )
    if group.is_main:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"eval_{split}.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_confusion_matrix(
            np.asarray(report["confusion_matrix"]),
            class_names,
            out / f"confusion_{split}.png",
            title=f"{checkpoint.name} on {split}",
        )
        np.savez_compressed(
            out / f"scores_{split}.npz",
            scores=scores,
            labels=labels,
            paths=np.asarray([str(dataset.records[i].path) for i in result.indices], dtype=str),
            indices=result.indices,
            class_names=np.asarray(class_names),
            unreadable_paths=np.asarray([u.path for u in result.unreadable], dtype=str),
            unreadable_reasons=np.asarray([u.reason for u in result.unreadable], dtype=str),
        )
    return report
