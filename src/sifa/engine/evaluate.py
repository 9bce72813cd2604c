"""Multi-view evaluation: every video scored once (also across processes), views averaged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from sifa.data.datasets import VideoClipDataset
from sifa.data.loader import seed_worker
from sifa.engine import distributed
from sifa.engine.builders import autocast_for, build_eval_set
from sifa.engine.checkpoint import load_model
from sifa.engine.distributed import Distributed, ShardedSampler
from sifa.engine.metrics import classification_report, plot_confusion_matrix


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
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(N, classes)`` (the plain average of every view's softmax) and
    labels ``(N,)`` of all videos of ``dataset``, in dataset order, on every process."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardedSampler(len(dataset), group.rank, group.world_size),
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        pin_memory=group.device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    scores, labels = [], []
    bar = tqdm(loader, desc="evaluating", unit="batch", disable=not (progress and group.is_main))
    for views, batch_labels in bar:
        batch, count = views.shape[:2]
        with autocast_for(precision, group.device):
            logits = model(views.flatten(0, 1).to(group.device, non_blocking=True))
        probabilities = logits.float().softmax(-1).view(batch, count, -1).mean(1)
        scores.append(probabilities.cpu().numpy())
        labels.append(batch_labels.numpy())
    model.train(was_training)
    indices = np.asarray(loader.sampler.indices, dtype=np.int64)
    empty = np.zeros((0, dataset.num_classes), dtype=np.float32)
    local_scores = np.concatenate(scores) if scores else empty
    local_labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    _, all_scores, all_labels = distributed.gather_in_order(
        group, indices, local_scores, local_labels
    )
    return all_scores, all_labels


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
    ``scores_<split>.npz`` (``scores``, ``labels``, ``paths``, ``class_names``) to ``out_dir``
    (by the main process), and return the report."""
    group = group or distributed.setup(config.device)
    model, _, class_names = load_model(checkpoint, group.device)
    dataset = build_eval_set(
        config,
        split,
        clips=config.data.test_clips,
        crops=config.data.test_crops,
        class_names=class_names,
    )
    scores, labels = score_videos(
        model,
        dataset,
        group,
        batch_size=config.data.val_batch_size,
        num_workers=config.data.num_workers,
        precision=config.precision,
        progress=config.progress,
    )
    labelled = labels >= 0
    report = classification_report(scores[labelled], labels[labelled], class_names)
    report.update(
        split=split,
        checkpoint=str(checkpoint),
        views=config.data.test_clips * config.data.test_crops,
        unreadable_replaced=int(distributed.sum_over_processes(group, dataset.skip_count)[0]),
    )
    if group.is_main:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"eval_{split}.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_confusion_matrix(
            np.asarray(report["confusion_matrix"]),
            class_names,
            out / f"confusion_{split}.png",
            title=f"{Path(checkpoint).name} on {split}",
        )
        np.savez_compressed(
            out / f"scores_{split}.npz",
            scores=scores,
            labels=labels,
            paths=np.asarray([str(r.path) for r in dataset.records]),
            class_names=np.asarray(class_names),
        )
    return report
