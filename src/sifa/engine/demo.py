"""``sifa demo``: SIFA-Net against C2D and TSM on the synthetic motion-order task, on a CPU.

Makes the synthetic dataset if it is not there, trains the three small networks with the same
recipe and number of updates (with ``seeds`` seeds each), scores each run's checkpoint on the
validation videos (the one ``sifa eval --checkpoint RUN`` picks: ``best``, else ``last``, with
the same views), prints a table (each score's mean, minimum and maximum over the seeds) and
writes ``training_curves.png``, one confusion matrix per model (summed over the seeds),
``results.json`` and ``results.md``. One run is one draw: the seed and the machine's rounding
decide how soon SIFA-Net learns the order, so the README shows the demo over seeds.
"""

from __future__ import annotations

import json
import shutil
import signal
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
from sifa.files import replace_atomically
from sifa.models.complexity import model_complexity

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
        "epochs": 20,
        "warmup_epochs": 1,
        "clip_grad_norm": 5.0,
        # SIFA's offsets at a tenth of the rate: at the full rate AdamW moved them 1.5 to 2.7
        # feature-map pixels in the first epoch, on maps of 8, 4 and 2 pixels, and the order was
        # learned late or not at all in one seed in two (docs/demo.md).
        "offset_lr_scale": 0.1,
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


def run_folder(out_dir: Path, model: str, seed: int) -> Path:
    """Where the demo trains ``model`` with ``seed``: ``OUT/<model>`` for seed 0 (the run the
    README's other examples use), ``OUT/<model>-seed<N>`` for the others."""
    return out_dir / (model if seed == 0 else f"{model}-seed{seed}")


class RunStopped(KeyboardInterrupt):
    """A signal stopped a run's training (which saved its checkpoint): the demo stops there,
    rather than score a half-trained run and go on with the next one."""

    def __init__(self, signal_number: int, output_dir: Path) -> None:
        super().__init__(f"{signal.Signals(signal_number).name} stopped the run in {output_dir}")
        self.signal_number = signal_number


def _train_and_score(config, out_dir: Path, data: SyntheticConfig, group) -> tuple[dict, dict]:
    """Train one run and score its checkpoint; ``(row, what the plots need)``."""
    model_name = config.model.name
    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    if result.interrupted:
        raise RunStopped(result.interrupted, result.output_dir)
    # What `sifa eval --checkpoint RUN` scores: best, else last, with the test views.
    checkpoint = resolve_checkpoint(result.output_dir)
    print(f"{model_name} (seed {config.seed}): scoring {checkpoint}", flush=True)
    model, _, class_names = load_model(checkpoint, "cpu")
    data_config = config.data
    val_set = build_eval_set(
        config, "val", clips=data_config.test_clips, crops=data_config.test_crops,
        class_names=class_names,
    )  # fmt: skip
    scored = score_videos(model, val_set, group, batch_size=data_config.val_batch_size)
    if scored.unreadable:
        print(f"{len(scored.unreadable)} unreadable validation videos left out", flush=True)
    report = classification_report(scored.scores, scored.labels, class_names)
    pair, order = _pair_scores(scored.scores, scored.labels)
    cost = model_complexity(
        model_name, data.frames, data.size, num_classes=len(class_names),
        **config.model.switches,
    )  # fmt: skip
    row = {
        "model": model_name,
        "seed": int(config.seed),
        "params_m": cost.params / 1e6,
        "gmacs": cost.gmacs,
        "train_seconds": seconds,
        "val_top1": report["top1"],
        "right_pair": pair,
        "right_order_given_pair": order,
        "checkpoint": checkpoint.relative_to(out_dir).as_posix(),
    }
    extras = {
        "history": result.history,
        "confusion": np.asarray(report["confusion_matrix"]),
        "class_names": class_names,
    }
    return row, extras


RUN_RECORD = "demo_run.json"  # in each run's folder: what the demo made of it


def _recorded_config(config) -> dict:
    """The settings that make a run what it is (not how it reports progress)."""
    settings = OmegaConf.to_container(config, resolve=True)
    for key in ("progress", "log_every"):
        settings.pop(key, None)
    return settings


def _write_record(config, row: dict, extras: dict) -> None:
    record = {
        "config": _recorded_config(config),
        "row": row,
        "history": extras["history"],
        "confusion": extras["confusion"].tolist(),
        "class_names": list(extras["class_names"]),
    }
    path = Path(config.output_dir) / RUN_RECORD
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(record) + "\n"))


def _finished_run(config) -> tuple[dict, dict] | None:
    """``(row, extras)`` of a run the demo finished earlier in ``config.output_dir`` with the
    same settings; None if there is none (or it was trained otherwise, or its record is
    unreadable)."""
    path = Path(config.output_dir) / RUN_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("config") != _recorded_config(config):
        return None
    if not {"row", "history", "confusion", "class_names"} <= record.keys():
        return None  # written by another version, or damaged: train again
    extras = {
        "history": record["history"],
        "confusion": np.asarray(record["confusion"]),
        "class_names": record["class_names"],
    }
    return record["row"], extras


SPREAD_KEYS = ("val_top1", "right_pair", "right_order_given_pair", "train_seconds")


def summarize(runs: list[dict]) -> list[dict]:
    """Per model, in the order the runs came: the number of seeds, and mean, min and max of
    every score and of the training time."""
    summary = []
    for model in dict.fromkeys(run["model"] for run in runs):
        mine = [run for run in runs if run["model"] == model]
        entry = {"model": model, "seeds": [run["seed"] for run in mine],
                 "params_m": mine[0]["params_m"], "gmacs": mine[0]["gmacs"]}  # fmt: skip
        for key in SPREAD_KEYS:
            values = [run[key] for run in mine]
            entry[key] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values)}
        summary.append(entry)
    return summary


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    models: tuple[str, ...] = DEMO_MODELS,
    epochs: int | None = None,
    data: SyntheticConfig = DEMO_DATA,
    progress: bool = True,
    seeds: int = 1,
    data_dir: str | Path | None = None,
    reuse: bool = False,
) -> dict:
    """Run the demo: every model trained with seeds ``0 .. seeds - 1`` on the data in
    ``data_dir`` (default ``OUT/data``, written there first if it is not complete). Each run
    leaves its scores in ``demo_run.json`` in its folder; with ``reuse``, a run finished
    earlier with the same settings is taken from there instead of trained again (an
    interrupted many-seed benchmark goes on where it stopped). Returns and writes to
    ``results.json``: ``{"runs": [one row per run], "models": [mean, min and max per model],
    "seconds": wall time}``."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    begin = time.perf_counter()
    out_dir = Path(out_dir)
    if data_dir is None:
        data_dir = out_dir / "data"
        make_synthetic_dataset(data_dir, data, progress=progress)
    group = distributed.setup("cpu")
    runs, histories, run_groups, confusions = [], {}, {}, {}
    for model_name in models:
        for seed in range(seeds):
            config = demo_config(data_dir, out_dir, model_name, epochs)
            config.seed = seed
            config.output_dir = str(run_folder(out_dir, model_name, seed))
            config.progress = progress
            if not progress:  # quiet: the epoch lines only, no per-update JSON lines
                config.log_every = 10**9
            finished = _finished_run(config) if reuse else None
            if finished is not None:
                print(f"\n== {model_name}, seed {seed}: finished earlier in "
                      f"{config.output_dir}", flush=True)  # fmt: skip
                row, extras = finished
            else:
                shutil.rmtree(config.output_dir, ignore_errors=True)  # the demo's earlier run
                print(f"\n== {model_name}, seed {seed}: {config.optim.epochs} epochs", flush=True)
                row, extras = _train_and_score(config, out_dir, data, group)
                _write_record(config, row, extras)
            runs.append(row)
            name = model_name if seeds == 1 else f"{model_name} (seed {seed})"
            histories[name] = extras["history"]
            run_groups[name] = model_name
            total = confusions.get(model_name, (0, None))[0] + extras["confusion"]
            confusions[model_name] = (total, extras["class_names"])
    over = "" if seeds == 1 else f", {seeds} seeds summed"
    for model_name, (matrix, class_names) in confusions.items():
        plot_confusion_matrix(
            matrix, class_names, out_dir / f"confusion_{model_name}.png",
            title=f"{model_name}: synthetic validation set{over}",
        )  # fmt: skip
    plot_training_curves(histories, out_dir / "training_curves.png", title="sifa demo",
                         groups=run_groups)  # fmt: skip
    results = {
        "runs": runs,
        "models": summarize(runs),
        "seconds": time.perf_counter() - begin,
    }
    table = format_results(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "results.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nfigures and results in {out_dir}/", flush=True)
    return results


def _spread(values: dict, percent: bool = True) -> str:
    """``98.0%``, or over several seeds ``97.4% (95.0-99.5)``."""
    scale, unit, digits = (100, "%", 1) if percent else (1, "", 0)

    def number(x: float) -> str:
        return f"{scale * x:.{digits}f}"

    text = f"{number(values['mean'])}{unit}"
    if values["min"] != values["max"]:
        text += f" ({number(values['min'])}-{number(values['max'])})"
    return text


def format_results(results: dict) -> str:
    """The demo's table: one row per model; with several seeds, each score as its mean and,
    in brackets, its minimum and maximum over the seeds."""
    lines = [
        "| model | seeds | params (M) | GMACs/clip | train time per run (s) | val top-1 "
        "| right pair | right order, given the pair |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in results["models"]:
        lines.append(
            f"| {m['model']} | {len(m['seeds'])} | {m['params_m']:.2f} | {m['gmacs']:.3f} "
            f"| {_spread(m['train_seconds'], percent=False)} | {_spread(m['val_top1'])} "
            f"| {_spread(m['right_pair'])} | {_spread(m['right_order_given_pair'])} |"
        )
    minutes, seconds = divmod(round(results["seconds"]), 60)
    lines.append(f"\nwall time {minutes} min {seconds:02d} s, data and scoring included")
    return "\n".join(lines)
