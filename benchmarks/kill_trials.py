"""Kill trials: `sifa train` killed with SIGKILL, then resumed; does every run still end with
the weights of an uninterrupted one?

    python benchmarks/kill_trials.py                  # 22 trials: 11 at random moments, 11 in saves
    python benchmarks/kill_trials.py --trials 40 --seed 1

A tiny synthetic task (SIFA-Net R18 at width 8, 32 x 32 px, 12 updates) saves ``last`` after
every update (``checkpoint_every=1``), so that a large share of the training time is spent
saving. Half the trials send SIGKILL at a random moment of the training; the other half stop
the process inside a save, at a random stage of a random save of ``last`` or ``best``
(``SIFA_TEST_KILL_AT``). Each killed run is resumed with ``--resume`` to the end and its final
``last`` and ``best`` weights are compared, bit for bit, with those of an uninterrupted run.
Prints one line per trial and the totals: trials, resumable, equal weights, and how many kills
left a partial save behind (temporary files or a state file that no weights file names).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sifa.data.synthetic import SyntheticConfig, make_synthetic_dataset
from sifa.engine.checkpoint import KILL_AT_VARIABLE, SAVE_STAGES, load_weights
from sifa.engine.config import TrainConfig
from sifa.engine.demo import synthetic_splits

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
DATA = SyntheticConfig(videos_per_class=6, val_videos_per_class=2, size=32, frames=8, num_pairs=2)


def write_config(data_dir: Path, output_dir: Path, path: Path) -> Path:
    config = OmegaConf.merge(
        OmegaConf.structured(TrainConfig),
        {
            "model": {"name": "sifa_resnet18", "switches": {"base_width": 8, "dropout": 0.3}},
            "data": {**synthetic_splits(data_dir), "clip_len": 8, "train_size": 32,
                     "color_jitter": None, "blur_p": 0.0, "test_short_side": 32,
                     "test_crop_size": 32, "test_clips": 1, "test_crops": 1, "batch_size": 8,
                     "val_batch_size": 4, "num_workers": 0},
            "optim": {"name": "adamw", "lr": 0.002, "epochs": 4, "warmup_epochs": 0.5},
            "output_dir": str(output_dir), "progress": False, "tensorboard": False,
            "log_every": 1, "eval_every": 1, "checkpoint_every": 1, "threads": 1,
        },
    )  # fmt: skip
    path.write_text(OmegaConf.to_yaml(config))
    return path


def sifa_train(config: Path, *args: str, kill_at: str | None = None) -> subprocess.Popen:
    env = {**ENV, KILL_AT_VARIABLE: kill_at} if kill_at else ENV
    command = [sys.executable, "-m", "sifa", "train", str(config), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)  # fmt: skip


def weights(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_weights(folder / "checkpoints" / name)[0] for name in ("last", "best")}


def equal(found: dict, expected: dict) -> bool:
    """Every tensor of every checkpoint equal, bit for bit."""
    return all(
        found[name].keys() == tensors.keys()
        and all(torch.equal(found[name][key], value) for key, value in tensors.items())
        for name, tensors in expected.items()
    )


def partial_save_left(folder: Path) -> bool:
    checkpoints = folder / "checkpoints"
    if not checkpoints.is_dir():
        return False
    temporary = any(p.name.startswith(".") for p in checkpoints.iterdir())
    return temporary or len(list(checkpoints.glob("last.state-*.pt"))) > 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=22)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        make_synthetic_dataset(scratch / "data", DATA, progress=False)
        reference_config = write_config(scratch / "data", scratch / "reference", scratch / "r.yaml")
        reference = sifa_train(reference_config)
        reference_lines, start = [], None
        for line in reference.stdout:
            if line.startswith("{"):
                start = start or time.perf_counter()  # the first update is done
                reference_lines.append(json.loads(line))
        if reference.wait() != 0:
            print(reference.stderr.read(), file=sys.stderr)
            return 1
        seconds = time.perf_counter() - start  # training after the first update
        expected = weights(scratch / "reference")
        updates = max(r["update"] for r in reference_lines)
        print(f"uninterrupted run: {updates} updates, {seconds:.1f} s after the first")

        totals = {"trials": 0, "killed": 0, "partial save left": 0, "resumable": 0, "equal": 0}
        for trial in range(args.trials):
            run = scratch / f"trial{trial}"
            config = write_config(scratch / "data", run, scratch / f"t{trial}.yaml")
            if trial % 2:
                name = "best" if rng.random() < 0.25 else "last"
                stage = rng.choice(SAVE_STAGES if name == "last" else SAVE_STAGES[2:])  # no state
                count = rng.randint(1, 2 if name == "best" else updates)
                how = f"{name}:{stage}@{count}"
                process = sifa_train(config, kill_at=how)
                process.communicate()
            else:
                process = sifa_train(config)
                next(line for line in process.stdout if line.startswith("{"))  # training began
                delay = rng.uniform(0, seconds)
                how = f"SIGKILL after {delay:.2f} s of training"
                time.sleep(delay)
                process.kill()
                process.communicate()
            killed = process.returncode == -signal.SIGKILL
            partial = partial_save_left(run)
            # Killed before its first save: there is nothing to resume, so start again.
            has_checkpoint = (run / "checkpoints" / "last.safetensors").is_file()
            resumed = sifa_train(config, *(["--resume"] if has_checkpoint else []))
            _, err = resumed.communicate()
            resumable = resumed.returncode == 0
            same = resumable and equal(weights(run), expected)
            if not resumable:
                print(err.strip().splitlines()[-1] if err.strip() else "(no message)")
            for key, value in zip(totals, (True, killed, partial, resumable, same), strict=True):
                totals[key] += value
            print(
                f"trial {trial:2d} ({how}): killed {killed}, partial save left {partial}, "
                f"resumed {resumable}, equal weights {same}",
                flush=True,
            )
        print(", ".join(f"{key} {value}" for key, value in totals.items()))
        return 0 if totals["equal"] == totals["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
