"""``sifa demo``: SIFA-Net against C2D and TSM on the synthetic motion-order task, on a CPU.

Makes the synthetic dataset if it is not there, trains the three small networks with the same
recipe and number of updates, scores each run's checkpoint on the validation videos (the one
``sifa eval --checkpoint RUN`` picks: ``best``, else ``last``, with the same views), prints a
table and writes ``training_curves.png``, one confusion matrix per model, ``results.json`` and
``results.md``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from sifa.data.synthetic import SyntheticConfig, make_synthetic_dataset
from sifa.engine import distributed
from sifa.engine.builders import build_eval_set
from sifa.engine.checkpoint import load_model, resolve_checkpoint
from sifa.engine.config import TrainConfig, validate
from sifa.engine.evaluate import score_videos
from sifa.engine.metrics import classification_report, plot_confusion_matrix, plot_training_curves
from sifa.engine.trainer import train
from sifa.tools.flops import model_complexity

DEMO_MODELS = ("sifa_resnet18", "c2d_resnet18", "tsm_resnet18")
# 8 frames: two 4-frame motion phases, one stem window each, so the order of the phases is
# the order of the network's two time steps.
DEMO_DATA = SyntheticConfig(frames=8)

# The recipe; configs/demo_synthetic.yaml holds the same settings for `sifa train`.
DEMO_RECIPE = {
    "model": {"name": "sifa_resnet18", "switches": {"base_width": 16, "dropout": 0.0}},
    "data": {
        "clip_len": 8,
        "train_size": 64,
        "train_crop": "center",  # position, speed and direction are the label: no random crops
        "flip": False,  # left and right are different classes
        "color_jitter": None,
        "grayscale_p": 0.0,
        "blur_p": 0.0,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "test_short_side": 64,
        "test_crop_size": 64,
        "test_clips": 1,
        "test_crops": 1,
        "batch_size": 16,
        "val_batch_size": 16,
        "num_workers": 0,
        "cache_videos": True,  # 1000 videos of 8 x 64 x 64: decoded once, about 100 MB
    },
    "optim": {
        "name": "adamw",
        "lr": 0.002,
        "weight_decay": 0.05,
        "epochs": 16,
        "warmup_epochs": 1,
        "clip_grad_norm": 5.0,
    },
    "eval_every": 2,
    "log_every": 10,
    "checkpoint_minutes": 0,  # minutes-long runs: the epoch-end checkpoints are enough
}


def synthetic_splits(data_dir: Path) -> dict:
    """``data.train`` and ``data.val`` of a dataset written by ``sifa make-synthetic``."""
    return {
        split: {
            "format": "video_list",
            "root": str(data_dir),
            "annotations": str(data_dir / f"{split}.txt"),
            "labels": str(data_dir / "classes.txt"),
        }
        for split in ("train", "val")
    }


def demo_config(data_dir: Path, output_dir: Path, model: str, epochs: int | None = None):
    """The demo's training config for ``model``, data in ``data_dir``."""
    config = OmegaConf.merge(
        OmegaConf.structured(TrainConfig), DEMO_RECIPE, {"data": synthetic_splits(data_dir)}
    )
    config.model.name = model
    config.output_dir = str(output_dir / model)
    if epochs is not None:
        config.optim.epochs = epochs
    validate(config, "demo")
    return config


def _pair_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Accuracy of the class pair, and of the order given the right pair."""
    predicted = scores.argmax(1)
    right_pair = predicted // 2 == labels // 2
    right_order = (predicted == labels)[right_pair]
    return float(right_pair.mean()), float(right_order.mean()) if right_order.size else 0.0


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    models: tuple[str, ...] = DEMO_MODELS,
    epochs: int | None = None,
    data: SyntheticConfig = DEMO_DATA,
    progress: bool = True,
) -> list[dict]:
    """Run the demo; returns one result row per model (also written to ``results.json``)."""
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    make_synthetic_dataset(data_dir, data, progress=progress)
    group = distributed.setup("cpu")
    rows, histories = [], {}
    for model_name in models:
        config = demo_config(data_dir, out_dir, model_name, epochs)
        config.progress = progress
        if not progress:  # quiet: the epoch lines only, no per-update JSON lines
            config.log_every = 10**9
        shutil.rmtree(config.output_dir, ignore_errors=True)  # the demo's own earlier run
        print(f"\n== {model_name}: {config.optim.epochs} epochs", flush=True)
        start = time.perf_counter()
        result = train(config)
        seconds = time.perf_counter() - start
        # What `sifa eval --checkpoint RUN` scores: best, else last, with the test views.
        checkpoint = resolve_checkpoint(result.output_dir)
        print(f"{model_name}: scoring {checkpoint}", flush=True)
        model, _, class_names = load_model(checkpoint, "cpu")
        data_config = config.data
        val_set = build_eval_set(
            config,
            "val",
            clips=data_config.test_clips,
            crops=data_config.test_crops,
            class_names=class_names,
        )
        scored = score_videos(model, val_set, group, batch_size=data_config.val_batch_size)
        if scored.unreadable:
            print(f"{len(scored.unreadable)} unreadable validation videos left out", flush=True)
        report = classification_report(scored.scores, scored.labels, class_names)
        pair, order = _pair_scores(scored.scores, scored.labels)
        cost = model_complexity(
            model_name,
            data.frames,
            data.size,
            num_classes=len(class_names),
            **config.model.switches,
        )
        rows.append(
            {
                "model": model_name,
                "params_m": cost.params / 1e6,
                "gmacs": cost.gmacs,
                "train_seconds": seconds,
                "val_top1": report["top1"],
                "right_pair": pair,
                "right_order_given_pair": order,
                "checkpoint": checkpoint.relative_to(out_dir).as_posix(),
            }
        )
        histories[model_name] = result.history
        plot_confusion_matrix(
            np.asarray(report["confusion_matrix"]),
            class_names,
            out_dir / f"confusion_{model_name}.png",
            title=f"{model_name} ({checkpoint.stem}): synthetic validation set",
        )
    plot_training_curves(histories, out_dir / "training_curves.png", title="sifa demo")
    table = format_results(rows)
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out_dir / "results.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nfigures and results in {out_dir}/", flush=True)
    return rows


def format_results(rows: list[dict]) -> str:
    lines = [
        "| model | params (M) | GMACs/clip | train time (s) | val top-1 | right pair "
        "| right order, given the pair |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params_m']:.2f} | {r['gmacs']:.3f} | {r['train_seconds']:.0f} "
            f"| {100 * r['val_top1']:.1f}% | {100 * r['right_pair']:.1f}% "
            f"| {100 * r['right_order_given_pair']:.1f}% |"
        )
    return "\n".join(lines)
