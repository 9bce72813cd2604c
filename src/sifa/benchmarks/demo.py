"""``sifa benchmark demo``: the demo over many seeds, on its data and on a perturbed copy.

One run of the demo is one draw: which seed starts the networks, and the machine's rounding,
decide how soon SIFA-Net learns the order of the motions. This benchmark trains every model
with seeds ``0 .. N-1`` on the synthetic data, then again on a copy of the same videos
re-encoded by ``sifa prepare`` at another x264 CRF (every frame a few grey levels off, as
another machine's encoder might make them), and checks the demo's promise on every run:
SIFA-Net at least ``sifa_goal`` validation top-1, C2D at most ``c2d_goal``. Runs finished
earlier in the output folder with the same settings are kept, so an interrupted benchmark
(hours on a CPU) goes on where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sifa.data.annotations import DatasetSpec
from sifa.data.prepare import PrepareSettings, prepare_dataset
from sifa.data.synthetic import make_synthetic_dataset
from sifa.engine.demo import DEMO_DATA, run_demo, synthetic_splits

# The demo's promise: every SIFA-Net run at or above, every C2D run at or below.
SIFA_GOAL = 0.95
C2D_GOAL = 0.60


@dataclass(frozen=True)
class Verdict:
    data: str  # "original" or "crf N"
    model: str
    goal: str  # ">= 95%" or "<= 60%"
    worst: float  # the run furthest from the goal
    met: bool


def perturbed_copy(data_dir: Path, out: Path, crf: int, *, progress: bool) -> Path:
    """The synthetic dataset in ``data_dir`` re-encoded at ``crf`` into ``out``, in the same
    layout (``train.txt``, ``val.txt``, ``classes.txt``, ``videos/``)."""
    settings = PrepareSettings(crf=crf)
    for split, spec in synthetic_splits(data_dir).items():
        source = DatasetSpec(spec["format"], spec["root"], spec["annotations"], spec["labels"])
        result = prepare_dataset(source, out, settings, progress=progress,
                                 description=f"re-encoding {split} at crf {crf}")  # fmt: skip
        if result.unreadable:
            raise RuntimeError(f"{len(result.unreadable)} videos could not be re-encoded: "
                               f"see {result.report}")  # fmt: skip
    return out


def verdicts(label: str, results: dict, sifa_goal: float, c2d_goal: float) -> list[Verdict]:
    """The goal of each model the goals name, checked on every one of its runs."""
    found = []
    for model, worst_of, goal, threshold in (
        ("sifa", min, f">= {100 * sifa_goal:.0f}%", sifa_goal),
        ("c2d", max, f"<= {100 * c2d_goal:.0f}%", c2d_goal),
    ):
        for entry in results["models"]:
            if entry["model"].startswith(f"{model}_"):
                worst = worst_of(r["val_top1"] for r in results["runs"]
                                 if r["model"] == entry["model"])  # fmt: skip
                met = worst >= threshold if worst_of is min else worst <= threshold
                found.append(Verdict(label, entry["model"], goal, worst, met))
    return found


def run_demo_benchmark(
    out: str | Path = "runs/demo-seeds",
    *,
    seeds: int = 8,
    crf: int | None = 30,
    models: tuple[str, ...] = ("sifa_resnet18", "c2d_resnet18"),
    sifa_goal: float = SIFA_GOAL,
    c2d_goal: float = C2D_GOAL,
    progress: bool = False,
) -> list[Verdict]:
    """Run the demo with ``seeds`` seeds on its data, and with ``crf`` on a copy re-encoded
    at that CRF (None: not); print each table and the verdicts; return the verdicts."""
    out = Path(out)
    data_dir = out / "data"
    make_synthetic_dataset(data_dir, DEMO_DATA, progress=progress)
    versions = {"original": data_dir}
    if crf is not None:
        versions[f"crf {crf}"] = perturbed_copy(data_dir, out / f"data-crf{crf}", crf,
                                                progress=progress)  # fmt: skip
    found = []
    for label, folder in versions.items():
        print(f"\n==== {label} data: {folder}", flush=True)
        results = run_demo(out / label.replace(" ", ""), models=models, seeds=seeds,
                           data_dir=folder, progress=progress, reuse=True)  # fmt: skip
        found += verdicts(label, results, sifa_goal, c2d_goal)
    print("\n" + format_verdicts(found, seeds))
    return found


def format_verdicts(found: list[Verdict], seeds: int) -> str:
    lines = [f"goals over {seeds} seeds per model and data:"]
    for v in found:
        word = "met" if v.met else "MISSED"
        lines.append(f"  {v.data:>8}: {v.model} {v.goal} on every run: {word} "
                     f"(worst run {100 * v.worst:.1f}%)")  # fmt: skip
    return "\n".join(lines)
