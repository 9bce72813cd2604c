"""``sifa publish``: a trained run as a Hugging Face Hub model folder, pushed if asked.

The folder (read back by :mod:`sifa.models.hub`) holds the run checkpoint's tensors unchanged
in ``model.safetensors``, a ``config.json`` with the run config, and a model card
(``README.md``) made with huggingface_hub's ``ModelCard``: what the model is, how to load it,
its classes, the training recipe, and the evaluation of that checkpoint when the run has one
(``sifa eval``'s report: top-1, top-5, the views; its confusion figure copied beside). The card
states no number that no evaluation measured.

The folder is written whole into a hidden sibling, checked, then renamed into place: a failure
leaves the destination as it was. Pushing (``huggingface_hub.HfApi``) comes after, so a Hub
that cannot be reached leaves the written folder, and says how to push it later.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from safetensors.torch import save_file

from sifa import __version__
from sifa.engine.checkpoint import CheckpointContents, read_checkpoint
from sifa.files import remove_stale_temporaries, temporary_path
from sifa.models.hub import (
    CONFIG_FILE,
    FORMAT_KEY,
    HUB_PREFIX,
    MODEL_FORMAT,
    WEIGHTS_FILE,
    read_model_folder,
    readable_settings,
)
from sifa.models.registry import model_entry

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
FIGURE_FILE = "confusion.png"
CHECKPOINT_NAMES = ("best", "last")
PAPER = (
    'X. Long, Z. Qiu, Y. Pan, T. Yao, J. Luo, T. Mei, "Stand-Alone Inter-Frame Attention in '
    'Video Models", CVPR 2022 ([arXiv:2206.06931](https://arxiv.org/abs/2206.06931))'
)


class PublishError(ValueError):
    """A run that cannot be published as asked; the message names the file, folder or repo."""


@dataclass(frozen=True)
class Evaluation:
    """A ``sifa eval`` report of the checkpoint being published, and its confusion figure."""

    path: Path
    report: dict[str, Any]
    figure: Path | None

    @property
    def views(self) -> str:
        """``"10 clips x 3 crops"`` (reports from before sifa recorded both: ``"30 views"``)."""
        clips, crops = self.report.get("clips"), self.report.get("crops")
        if clips is None or crops is None:
            return f"{self.report['views']} views"
        return f"{clips} clip{'s' * (clips != 1)} x {crops} crop{'s' * (crops != 1)}"


@dataclass(frozen=True)
class PublishResult:
    folder: Path
    checkpoint: Path  # the run's weights file that was published
    files: list[str]  # the folder's files, sorted
    evaluation: Evaluation | None
    url: str | None  # the Hub repository pushed to, if any


def publish_run(
    run: str | Path,
    out_dir: str | Path,
    *,
    checkpoint_name: str | None = None,
    evaluation: str | Path | None = None,
    dataset: str | None = None,
    push: str | None = None,
    private: bool = False,
    overwrite: bool = False,
) -> PublishResult:
    """Write the model folder of ``run`` (its ``checkpoint_name`` checkpoint: ``best``, else
    ``last`` when not given) to ``out_dir``, and upload it to the Hub repository ``push``
    (``ORG/NAME``, created ``private`` if it does not exist) if given.

    ``evaluation``: a ``sifa eval`` report (``eval_val.json``) of that checkpoint; by default
    the run's own (``RUN/eval/eval_val.json``, else ``RUN/eval_val.json``) when it evaluates
    that checkpoint. ``dataset``: the evaluation's dataset as the card names it (a Hub dataset
    id, say; default: the name of the evaluated split's root folder). A non-empty ``out_dir``
    is replaced only with ``overwrite``. Errors: :class:`PublishError`, or the
    :class:`~sifa.models.weights.CheckpointError` of an unreadable checkpoint."""
    run, out = Path(run), Path(out_dir)
    if private and not push:
        raise PublishError("--private applies to the repository that --push creates; give --push")
    if push:
        _check_repo_id(push)
    checkpoint = run_checkpoint(run, checkpoint_name)
    _check_destination(out, run, overwrite)
    contents = read_checkpoint(checkpoint)
    found = find_evaluation(run, contents, evaluation)
    config = OmegaConf.to_container(contents.config, resolve=True)
    card = model_card(contents, config, found, repo_id=push, folder=out, dataset=dataset)

    def write(folder: Path) -> None:
        save_file(contents.weights, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        text = json.dumps(model_config(config, contents.class_names), indent=2) + "\n"
        (folder / CONFIG_FILE).write_text(text, encoding="utf-8")
        (folder / CARD_FILE).write_text(card, encoding="utf-8")
        if found is not None and found.figure is not None:
            shutil.copyfile(found.figure, folder / FIGURE_FILE)
        read_model_folder(folder)  # what loading will check, checked before it is in place

    write_folder_atomically(out, write)
    files = sorted(path.name for path in out.iterdir())
    url = push_folder(out, push, private=private) if push else None
    return PublishResult(out, checkpoint, files, found, url)


def run_checkpoint(run: Path, name: str | None) -> Path:
    """The weights file of ``run``'s checkpoint ``name`` (``best``, else ``last`` if None)."""
    if not run.is_dir():
        raise PublishError(f"run folder not found: {run}")
    if name is not None and name not in CHECKPOINT_NAMES:
        raise PublishError(f"the checkpoint name must be one of {CHECKPOINT_NAMES}, got {name!r}")
    for candidate in [name] if name else CHECKPOINT_NAMES:
        path = run / "checkpoints" / f"{candidate}.safetensors"
        if path.is_file():
            return path
    wanted = f"{name}.safetensors" if name else "best.safetensors or last.safetensors"
    raise PublishError(f"{run / 'checkpoints'} has no {wanted}: is {run} a training run folder?")


def _check_destination(out: Path, run: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PublishError(f"{out} exists and is not a folder")
    resolved_run, resolved_out = run.resolve(), out.resolve()
    if resolved_out == resolved_run or resolved_out in resolved_run.parents:
        raise PublishError(f"{out} holds the run {run}: publish into another folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise PublishError(f"{out} exists and is not empty: pass --overwrite to replace it")


# ---------------------------------------------------------------------------------------------
# The evaluation


def find_evaluation(
    run: Path, contents: CheckpointContents, given: str | Path | None
) -> Evaluation | None:
    """The evaluation the card reports: ``given`` (refused unless it evaluates the published
    checkpoint), else the run's own ``eval_val.json`` where it evaluates that checkpoint (one
    that does not is passed over with a warning), else None."""
    if given is not None:
        evaluation = read_evaluation(Path(given))
        problem = _evaluates_another_model(evaluation, contents)
        if problem:
            raise PublishError(problem)
        return evaluation
    for candidate in (run / "eval" / "eval_val.json", run / "eval_val.json"):
        if not candidate.is_file():
            continue
        try:
            evaluation = read_evaluation(candidate)
        except PublishError as error:
            logger.warning("%s; not used for the model card", error)
            continue
        problem = _evaluates_another_model(evaluation, contents)
        if problem is None:
            return evaluation
        logger.warning("%s; not used for the model card", problem)
    return None


def read_evaluation(path: Path) -> Evaluation:
    """A ``sifa eval`` report, and ``confusion_SPLIT.png`` beside it if it is there."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PublishError(f"cannot read the evaluation {path}: {error}") from None
    needed = ("split", "checkpoint", "top1", "top5", "num_videos", "views", "per_class_accuracy")
    missing = [key for key in needed if not isinstance(report, dict) or key not in report]
    if missing:
        raise PublishError(f"{path} is not a sifa eval report (no {', '.join(missing)})")
    figure = path.with_name(f"confusion_{report['split']}.png")
    return Evaluation(path, report, figure if figure.is_file() else None)


def _evaluates_another_model(evaluation: Evaluation, contents: CheckpointContents) -> str | None:
    """Why ``evaluation`` is not of the checkpoint in ``contents`` (None if it is)."""
    report, path = evaluation.report, evaluation.path
    evaluated = Path(report["checkpoint"])
    if evaluated.name != contents.path.name or (
        evaluated.exists() and not evaluated.samefile(contents.path)
    ):
        return f"{path} evaluates {evaluated}, not {contents.path}"
    update = report.get("checkpoint_update")
    if update is not None and update != contents.update:
        return (
            f"{path} evaluates {contents.path.name} as saved at update {update}, but it is now "
            f"from update {contents.update}: run sifa eval again"
        )
    if list(report["per_class_accuracy"]) != contents.class_names:
        return f"{path} was evaluated on other classes than {contents.path} was trained on"
    return None


# ---------------------------------------------------------------------------------------------
# The files


def model_config(config: dict[str, Any], class_names: list[str]) -> dict[str, Any]:
    """``config.json``: what :func:`sifa.models.hub.read_model_folder` reads back."""
    readable = readable_settings(config)
    return {
        "library_name": "sifa",
        FORMAT_KEY: MODEL_FORMAT,
        "sifa_version": __version__,
        "model_name": readable.pop("model_name"),
        "switches": readable.pop("switches"),
        "num_classes": len(class_names),
        "class_names": list(class_names),
        **readable,
        "config": config,
    }


def write_folder_atomically(out: Path, write) -> None:
    """``write(folder)`` into a hidden sibling of ``out``, then that folder renamed onto
    ``out`` (a folder there before is moved aside first and removed after). A failure leaves
    ``out`` as it was; leftovers of killed writes are removed by the next call."""
    out.parent.mkdir(parents=True, exist_ok=True)
    aside_name = f"{out.name}.replaced"
    remove_stale_temporaries(out.parent, lambda name: name in (out.name, aside_name))
    temporary, aside = temporary_path(out), temporary_path(out.with_name(aside_name))
    temporary.mkdir()
    placed = False
    try:
        write(temporary)
        if out.exists():
            os.rename(out, aside)
        try:
            os.rename(temporary, out)
            placed = True
        finally:
            if not placed and aside.exists():
                os.rename(aside, out)  # the folder that was there, back in place
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        if placed:
            shutil.rmtree(aside, ignore_errors=True)


def _check_repo_id(repo_id: str) -> None:
    """Before anything is written: an id the Hub would refuse."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        problem = f"--push {repo_id}: not a Hub repository id (ORG/NAME): {error}"
        raise PublishError(problem) from None


def push_folder(folder: Path, repo_id: str, *, private: bool) -> str:
    """Upload ``folder`` to the Hub model repository ``repo_id`` (created if needed); its URL.
    Any failure is a one-line :class:`PublishError` naming the repository."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="sifa publish")
    except Exception as error:  # the network, the Hub, the token: all end here, said once
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise PublishError(
            f"could not push to the Hub repository {repo_id} ({type(error).__name__}: {first}); "
            f"{folder} is written: push it later with `hf upload {repo_id} {folder}`"
        ) from error
    return str(url)


# ---------------------------------------------------------------------------------------------
# The model card


def model_card(
    contents: CheckpointContents,
    config: dict[str, Any],
    evaluation: Evaluation | None,
    *,
    repo_id: str | None,
    folder: Path,
    dataset: str | None,
) -> str:
    """The model card of the folder ``folder`` (to be pushed to ``repo_id``, if known): a YAML
    header made by ``ModelCardData`` (library, pipeline, tags, and the evaluation as
    model-index results), then the body."""
    from huggingface_hub import ModelCard, ModelCardData

    name = repo_id.split("/")[-1] if repo_id else folder.resolve().name
    model_name = config["model"]["name"]
    entry = model_entry(model_name)
    family = getattr(entry.builder, "func", entry.builder).__module__.rsplit(".", 1)[-1]
    data = ModelCardData(
        library_name="sifa",
        pipeline_tag="video-classification",
        tags=["sifa", family, model_name, "video-classification"],
        model_name=name,
        datasets=[dataset] if dataset else None,
        metrics=["accuracy"] if evaluation else None,
        eval_results=_eval_results(evaluation, dataset) if evaluation else None,
    )
    sections = [
        _card_intro(name, model_name, entry.note, contents),
        _card_usage(repo_id, name, model_name),
        _card_inference(config),
        _card_evaluation(evaluation, dataset),
        _card_classes(contents.class_names),
        _card_training(config, contents),
        _card_files(evaluation),
        f"## Citation\n\nThe SIFA paper: {PAPER}.",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"))


def _dataset_name(evaluation: Evaluation, dataset: str | None) -> str:
    if dataset:
        return dataset
    root = evaluation.report.get("dataset")
    return Path(root).name if root else "unnamed dataset"


def _eval_results(evaluation: Evaluation, dataset: str | None) -> list:
    from huggingface_hub import EvalResult

    report, name = evaluation.report, _dataset_name(evaluation, dataset)
    common = dict(
        task_type="video-classification",
        task_name="Video classification",
        dataset_type=name,
        dataset_name=name,
        dataset_split=report["split"],
    )
    return [
        EvalResult(metric_type="accuracy", metric_value=round(100 * report["top1"], 2),
                   metric_name=f"top-1 accuracy (%, {evaluation.views})", **common),
        EvalResult(metric_type="top_5_accuracy", metric_value=round(100 * report["top5"], 2),
                   metric_name=f"top-5 accuracy (%, {evaluation.views})", **common),
    ]  # fmt: skip


def _card_intro(name: str, model_name: str, note: str, contents: CheckpointContents) -> str:
    saved = f", saved at training update {contents.update}" if contents.update else ""
    return (
        f"# {name}\n\n"
        f"A `{model_name}` video classifier for {len(contents.class_names)} classes, trained "
        "with sifa, a PyTorch implementation of Stand-Alone Inter-Frame Attention (SIFA, CVPR "
        "2022; see the citation below) and its baselines. The weights are the training run's "
        f"`{contents.path.stem}` checkpoint{saved}, unchanged.\n\n"
        f"`{model_name}`, as `sifa models` describes it: {note}."
    )


def _card_usage(repo_id: str | None, name: str, model_name: str) -> str:
    where = ""
    if repo_id is None:
        repo_id, where = f"ORG/{name}", f" (`ORG/{name}`: the repository that holds this folder)"
    hub_id = f"{HUB_PREFIX}{repo_id}"
    takes = (
        "With sifa installed, every command that takes `--checkpoint` takes this folder or its "
        f"Hub id{where}; the clip sampling and test views come from `config.json`:"
    )
    return f"""## How to use

{takes}

```bash
sifa predict video.mp4 --checkpoint {hub_id} --topk 5
sifa predict video.mp4 --checkpoint path/to/this/folder
```

In Python, the model alone, or with the video decoding, sampling and views:

```python
import sifa
from sifa.engine.predict import Predictor

model = sifa.create_model("{model_name}", pretrained="{hub_id}").eval()
print(Predictor("{hub_id}").predict("video.mp4", topk=5)["top"])
```

With `HF_HUB_OFFLINE=1`, a model already in the Hugging Face cache loads without the network."""


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def _card_inference(config: dict[str, Any]) -> str:
    data = config["data"]
    frames = data["clip_len"]
    if data["sampling"] == "segment":
        sampling = f"{frames} frames, one from each of {frames} equal segments of the video"
    elif data["frame_interval"] == 1:
        sampling = f"{frames} consecutive frames"
    else:
        sampling = f"{frames} frames, {data['frame_interval']} apart"
    views = f"{_plural(data['test_clips'], 'clip')} x {_plural(data['test_crops'], 'crop')}"
    rows = [
        f"clip: {sampling} (`{data['sampling']}` sampling)",
        f"test views: {views} of {data['test_crop_size']} x {data['test_crop_size']} pixels, "
        f"the short side resized to {data['test_short_side']}; their softmaxes are averaged",
        f"pixels: RGB in [0, 1], normalised with mean {data['mean']} and std {data['std']}",
        f"model switches: `{json.dumps(config['model'].get('switches') or {})}`",
    ]
    return "## Input\n\n" + "\n".join(f"- {row}" for row in rows)


def _card_evaluation(evaluation: Evaluation | None, dataset: str | None) -> str:
    if evaluation is None:
        return (
            "## Evaluation\n\nThis checkpoint has not been evaluated: no `sifa eval` report of "
            "it was found or given, so this card states no accuracy."
        )
    report = evaluation.report
    unreadable = report.get("num_unreadable") or 0
    left_out = f"; {unreadable} unreadable videos were left out" if unreadable else ""
    figure = (
        f"\n\n![Confusion matrix on {report['split']}]({FIGURE_FILE})" if evaluation.figure else ""
    )
    return (
        f"## Evaluation\n\n"
        f"`sifa eval` on the {report['split']} split of {_dataset_name(evaluation, dataset)} "
        f"({report['num_videos']} videos{left_out}), {evaluation.views} per video:\n\n"
        "| top-1 | top-5 | mean class accuracy | views |\n| ---: | ---: | ---: | --- |\n"
        f"| {100 * report['top1']:.2f}% | {100 * report['top5']:.2f}% | "
        f"{_percent(report.get('mean_class_accuracy'))} | {evaluation.views} |{figure}"
    )


def _percent(value: float | None) -> str:
    return "not recorded" if value is None else f"{100 * value:.2f}%"


def _card_classes(class_names: list[str]) -> str:
    listed = ", ".join(f"`{name}`" for name in class_names)
    return f"## Classes\n\n{len(class_names)} classes, in the order of the logits: {listed}."


def _card_training(config: dict[str, Any], contents: CheckpointContents) -> str:
    optim, data, model = config["optim"], config["data"], config["model"]
    starts = [
        f"{label} `{Path(model[key]).name}`"
        for key, label in (("pretrained", "ImageNet weights"), ("init_from", "the weights of"))
        if model.get(key)
    ]
    train = (data.get("train") or {}).get("root")
    on = f" on `{Path(train).name}`" if train else ""
    update = f" (update {contents.update})" if contents.update else ""
    rows = [
        f"optimiser: {optim['name']}, learning rate {optim['lr']} (warm-up "
        f"{optim['warmup_epochs']} epochs, then a cosine to {optim['min_lr']}), weight decay "
        f"{optim['weight_decay']}, label smoothing {optim['label_smoothing']}, "
        f"{_plural(optim['epochs'], 'epoch')}",
        f"batch: {data['batch_size']} clips per process and step, "
        f"{_plural(optim['accumulate'], 'step')} per update; precision {config['precision']}",
        f"augmentation: {', '.join(_augmentations(data))}",
        f"checkpoint: `{contents.path.stem}`{update}",
    ]
    return (
        f"## Training\n\nTrained{on} with sifa from "
        f"{', '.join(starts) if starts else 'random initialisation'}:\n\n"
        + "\n".join(f"- {row}" for row in rows)
        + '\n\n`config.json` holds the whole run config under `"config"`.'
    )


def _augmentations(data: dict[str, Any]) -> list[str]:
    found = [f"{data['train_crop'].replace('_', ' ')} crops of {data['train_size']} pixels"]
    if data.get("flip"):
        found.append("horizontal flips")
    if data.get("rand_augment"):
        settings = data["rand_augment"]
        found.append(f"RandAugment (n={settings['n']}, m={settings['m']})")
    found += [f"{key} (alpha {data[key]})" for key in ("mixup", "cutmix") if data.get(key)]
    if data.get("random_erasing"):
        found.append(f"random erasing (p {data['random_erasing']})")
    return found


def _card_files(evaluation: Evaluation | None) -> str:
    rows = [
        f"- `{WEIGHTS_FILE}`: the weights",
        f"- `{CONFIG_FILE}`: model name, switches, class names, input settings, and the run "
        "config (`sifa_format` " + MODEL_FORMAT + ")",
        f"- `{CARD_FILE}`: this card",
    ]
    if evaluation is not None and evaluation.figure is not None:
        rows.append(f"- `{FIGURE_FILE}`: the evaluation's confusion matrix")
    return "## Files\n\n" + "\n".join(rows)
