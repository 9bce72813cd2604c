"""``sifa extract-features``: pooled last-stage features of videos, one file per video.

A video is sampled and viewed as in testing (``data.clip_len`` frames per clip, ``clips x
crops`` views), the model's last stage gives a feature map ``(views, C, T', H', W')`` per head
(SIFA-Net: ``main`` and ``dual``, the dual res5 branch; other models: ``features``), and the
map is pooled:

- ``spatial`` ``avg`` / ``max`` reduces ``H', W'``; ``keep`` keeps them;
- then ``temporal`` ``avg`` / ``max`` reduces ``T'``; ``keep`` keeps it;
- then ``per="video"`` averages the views (the axis goes); ``per="clip"`` keeps one row per
  view (clips outer, crops inner).

So a head's array is ``[views,] C [, T'] [, H', W']``: ``(C,)`` with the defaults
(``per="video"``, ``avg``, ``avg``), ``(views, C, T', H', W')`` with ``per="clip"``, ``keep``,
``keep``. Features are float32.

Writing is resumable: a video whose files are all there is skipped (files are written
atomically, so one that exists is complete); an unreadable one is listed in the index with the
reason, never replaced by another video, and tried again by the next run. With ``torchrun``
each process extracts its share of the videos (each video on exactly one process) and the main
process writes the index at the end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sifa.data.annotations import VIDEO_EXTENSIONS, VideoRecord, load_annotations
from sifa.data.datasets import UnreadableVideo, VideoClipDataset
from sifa.engine import distributed
from sifa.engine.builders import autocast_for, build_eval_transform, build_sampler
from sifa.engine.checkpoint import load_model, resolve_checkpoint
from sifa.engine.config import TrainConfig, validate
from sifa.engine.distributed import Distributed, ShardedSampler
from sifa.engine.evaluate import collate_readable, gather_unreadable
from sifa.files import replace_atomically

logger = logging.getLogger(__name__)

INDEX_FORMAT = "sifa-features-1"
POOLINGS = ("avg", "max", "keep")
PER_CHOICES = ("clip", "video")
FILE_FORMATS = ("safetensors", "npy")


def pool_features(
    features: torch.Tensor, *, spatial: str = "avg", temporal: str = "avg", per: str = "video"
) -> torch.Tensor:
    """Pool a feature map ``(views, C, T', H', W')``: ``spatial`` over ``H', W'``, then
    ``temporal`` over ``T'`` (``avg``, ``max`` or ``keep``), then with ``per="video"`` the mean
    over the views. The result is ``[views,] C [, T'] [, H', W']``."""
    _check_choice("spatial", spatial, POOLINGS)
    _check_choice("temporal", temporal, POOLINGS)
    _check_choice("per", per, PER_CHOICES)
    if features.dim() != 5:
        raise ValueError(f"expected a feature map (views, C, T, H, W), got {tuple(features.shape)}")
    x = features
    if spatial != "keep":
        x = x.mean(dim=(3, 4)) if spatial == "avg" else x.amax(dim=(3, 4))
    if temporal != "keep":
        x = x.mean(dim=2) if temporal == "avg" else x.amax(dim=2)
    return x.mean(dim=0) if per == "video" else x


def feature_maps(model: torch.nn.Module, clips: torch.Tensor) -> dict[str, torch.Tensor]:
    """The last stage's feature maps ``(N, C, T', H', W')`` of ``clips`` ``(N, 3, T, H, W)``, by
    head: ``main`` and ``dual`` for SIFA-Net with its dual head, else ``features``."""
    from sifa.models.swin import SwinVideo

    output = model.forward_features(clips)
    if isinstance(output, tuple):  # ResNet3d: (res5, dual res5 or None)
        main, dual = output
        return {"features": main} if dual is None else {"main": main, "dual": dual}
    if isinstance(model, SwinVideo):  # tokens (N, T', H', W', C)
        return {"features": output.permute(0, 4, 1, 2, 3)}
    return {"features": output}


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class VideoSource:
    """The videos of a source: records, the folder their output names are relative to, and how
    to read them."""

    records: list[VideoRecord]
    root: Path
    backend: str = "pyav"
    reader_options: dict | None = None


def find_videos(
    source: str | Path,
    *,
    format: str | None = None,
    root: str | None = None,
    labels: str | None = None,
    backend: str = "pyav",
) -> VideoSource:
    """The videos of ``source``: one video file; a folder (every video file under it, at any
    depth, sorted by path); or an annotation file (a list, Kinetics CSV or Something-Something
    JSON, format guessed as ``sifa check-data`` does; ``root`` and ``labels`` as there). A
    video listed twice is kept once."""
    from sifa.data.check import guess_spec

    path = Path(source)
    if path.is_dir() and format in (None, "folder"):
        videos = sorted(
            p
            for p in path.rglob("*")
            if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith(".")
        )
        if not videos:
            raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {path}")
        return VideoSource([VideoRecord(p, -1) for p in videos], path, backend)
    if not path.exists():
        raise ValueError(f"not found: {path} (give a video, a folder or an annotation file)")
    if path.suffix.lower() in VIDEO_EXTENSIONS and format is None:
        return VideoSource([VideoRecord(path, -1)], path.parent, backend)
    spec = guess_spec(path, format=format, root=root, labels=labels, backend=backend)
    records, _ = load_annotations(spec)
    options = None
    if spec.backend == "frames":
        options = {"template": spec.frame_template, "start_index": spec.frame_start_index}
    seen, unique = set(), []
    for record in records:
        if record.path not in seen:
            seen.add(record.path)
            unique.append(record)
    if not unique:
        raise ValueError(f"{path} lists no videos")
    return VideoSource(unique, Path(spec.root), spec.backend, options)


def output_stem(video: Path, root: Path) -> Path:
    """The output name of ``video`` without suffix: its path relative to ``root`` (or, outside
    ``root``, its absolute path without the anchor), a video suffix dropped."""
    try:
        relative = video.relative_to(root)
    except ValueError:
        relative = Path(*video.absolute().parts[1:])
    if relative.suffix.lower() in VIDEO_EXTENSIONS:
        relative = relative.with_suffix("")
    return relative


def output_files(stem: Path, heads: list[str], file_format: str) -> dict[str, str]:
    """Head -> file (relative to the output folder): one ``.safetensors`` with every head, or
    ``.npy`` per head (``NAME.npy`` for a single ``features`` head, else ``NAME.HEAD.npy``)."""
    if file_format == "safetensors":
        return {head: f"{stem.as_posix()}.safetensors" for head in heads}
    if heads == ["features"]:
        return {"features": f"{stem.as_posix()}.npy"}
    return {head: f"{stem.as_posix()}.{head}.npy" for head in heads}


class _RecordingSampler:
    """A sampler that remembers the frame indices it gave last (in the process that ran it)."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler
        self.last: np.ndarray | None = None

    def __call__(self, num_frames: int) -> np.ndarray:
        self.last = np.asarray(self.sampler(num_frames))
        return self.last


class FeatureExtractor:
    """A model, its test-time clip sampling and views, and a pooling: video -> features.

    Give ``checkpoint`` (a sifa ``.safetensors`` file or run folder: the model and the data
    settings of its config) or ``model`` (a registered name with ``switches``: the default
    config's data settings; random weights drawn from ``seed``, so that every process and run
    gets the same ones, or ImageNet weights inflated from ``pretrained``). ``frames`` sets
    ``data.clip_len``; ``size`` the test short side and crop size; ``clips`` and ``crops`` the
    views (default: ``data.test_clips`` and ``data.test_crops``). See the module docstring for
    the pooling and the shapes.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        model: str | None = None,
        switches: dict | None = None,
        pretrained: str | Path | None = None,
        seed: int = 0,
        frames: int | None = None,
        size: int | None = None,
        clips: int | None = None,
        crops: int | None = None,
        spatial: str = "avg",
        temporal: str = "avg",
        per: str = "video",
        device: str | torch.device = "auto",
        precision: str = "fp32",
    ) -> None:
        if (checkpoint is None) == (model is None):
            raise ValueError("give either a checkpoint or a model name (--checkpoint or --model)")
        if checkpoint is not None and (switches or pretrained):
            given = "model switches" if switches else "--pretrained"
            raise ValueError(f"{given} go with --model; a checkpoint has its model and weights")
        for name, value in (("frames", frames), ("size", size), ("clips", clips)):
            _positive(name, value)
        if crops not in (None, 1, 3):
            raise ValueError(f"crops must be 1 or 3, got {crops!r}")
        _check_choice("spatial", spatial, POOLINGS)
        _check_choice("temporal", temporal, POOLINGS)
        _check_choice("per", per, PER_CHOICES)
        _check_choice("precision", precision, ("fp32", "bf16", "fp16"))
        if isinstance(device, str) and device in ("auto", "cpu", "cuda"):
            device = distributed.setup(device).device  # this process's GPU under torchrun
        self.device = torch.device(device)
        if checkpoint is not None:
            self.checkpoint: Path | None = resolve_checkpoint(checkpoint)
            self.model, config, _ = load_model(self.checkpoint, self.device)
            self.model_name = config.model.name
            self.switches = OmegaConf.to_container(config.model.switches, resolve=True)
        else:
            from sifa.models import create_model, load_2d_weights

            self.checkpoint = None
            config = OmegaConf.structured(TrainConfig)
            self.switches = dict(switches or {})
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = create_model(model, **self.switches)
            if pretrained:
                not_filled = load_2d_weights(self.model, pretrained)
                logger.info("inflated %s; %d keys left at init", pretrained, len(not_filled))
            self.model = self.model.to(self.device).eval()
            self.model_name = model
        data = config.data
        if frames is not None:
            data.clip_len = frames
        if size is not None:
            data.test_short_side = data.test_crop_size = size
        data.test_clips = clips or data.test_clips
        data.test_crops = crops or data.test_crops
        validate(config, "feature extraction")
        self.config: DictConfig = config
        self.pretrained = str(pretrained) if pretrained else None
        self.spatial, self.temporal, self.per = spatial, temporal, per
        self.precision = precision
        self.transform = build_eval_transform(config)

    @property
    def views(self) -> int:
        return self.config.data.test_clips * self.config.data.test_crops

    def settings(self) -> dict:
        """What decides the features (the index records it; a resumed run must match it)."""
        data = self.config.data
        return {
            "model": self.model_name,
            "switches": self.switches,
            "checkpoint": str(self.checkpoint.absolute()) if self.checkpoint else None,
            "pretrained": self.pretrained,
            "clip_len": data.clip_len,
            "frame_interval": data.frame_interval,
            "sampling": data.sampling,
            "short_video": data.short_video,
            "short_side": data.test_short_side,
            "crop_size": data.test_crop_size,
            "clips": data.test_clips,
            "crops": data.test_crops,
            "mean": list(data.mean),
            "std": list(data.std),
            "per": self.per,
            "spatial": self.spatial,
            "temporal": self.temporal,
            "precision": self.precision,
        }

    def heads(self) -> list[str]:
        """The names of the model's feature maps: ``["main", "dual"]`` or ``["features"]``."""
        return ["main", "dual"] if getattr(self.model, "dual_head", False) else ["features"]

    def dataset(self, source: VideoSource, *, on_error: str = "skip") -> VideoClipDataset:
        """The videos of ``source`` as multi-view items ``(views, 3, T, H, W)``; the sampler
        records each item's frame indices (:attr:`VideoClipDataset.sampler`'s ``last``)."""
        sampler = build_sampler(self.config, training=False, clips=self.config.data.test_clips)
        return VideoClipDataset(
            source.records,
            [],
            sampler=_RecordingSampler(sampler),
            transform=self.transform,
            backend=source.backend,
            reader_options=source.reader_options,
            multi_view=True,
            on_error=on_error,
        )

    @torch.no_grad()
    def features_of_views(self, views: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled features, by head, of the views ``(videos, views, 3, T, H, W)`` of videos:
        ``(videos, ...)`` with the per-video shapes of the module docstring, float32, CPU."""
        videos, count = views.shape[:2]
        clips = views.flatten(0, 1).to(self.device)
        if hasattr(self.model, "check_input"):
            self.model.check_input(clips)
        with autocast_for(self.precision, self.device):
            maps = feature_maps(self.model, clips)
        pooled = {}
        for head, features in maps.items():
            features = features.float().unflatten(0, (videos, count))
            pooled[head] = torch.stack(
                [
                    pool_features(f, spatial=self.spatial, temporal=self.temporal, per=self.per)
                    for f in features
                ]
            ).cpu()
        return pooled

    def extract(self, video: str | Path, *, backend: str = "pyav") -> dict[str, torch.Tensor]:
        """Pooled features of one video, by head (the shapes of the module docstring). An
        unreadable video raises its :class:`~sifa.data.decoding.VideoError`."""
        path = Path(video)
        dataset = self.dataset(VideoSource([VideoRecord(path, -1)], path.parent, backend),
                               on_error="raise")  # fmt: skip
        views, _ = dataset.load(0)
        return {head: f[0] for head, f in self.features_of_views(views.unsqueeze(0)).items()}


class _FeatureItems(Dataset):
    """``(record index, views, frame indices)`` per video to do, or its :class:`UnreadableVideo`."""

    def __init__(self, dataset: VideoClipDataset, todo: list[int]) -> None:
        self.dataset, self.todo = dataset, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, position: int):
        index = self.todo[position]
        item = self.dataset.evaluation_item(index)
        if isinstance(item, UnreadableVideo):
            return item
        return index, item[0], torch.from_numpy(self.dataset.sampler.last.copy())


@dataclass(frozen=True)
class ExtractionResult:
    """What :func:`extract_features` did: videos in the source, written by this run (over all
    processes), skipped because their files were there, and the unreadable ones."""

    num_videos: int
    written: int
    skipped: int
    unreadable: tuple[UnreadableVideo, ...]
    index_path: Path


def _write_video(out: Path, files: dict[str, str], features: dict[str, torch.Tensor],
                 metadata: dict[str, str], file_format: str) -> None:  # fmt: skip
    if file_format == "safetensors":
        tensors = {head: f.contiguous() for head, f in features.items()}
        path = out / next(iter(files.values()))
        replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        return
    for head, name in files.items():
        array = features[head].numpy()
        replace_atomically(out / name, lambda tmp, a=array: np.save(tmp, a))


def _shape(path: Path, head: str, file_format: str) -> list[int]:
    if file_format == "safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.get_slice(head).get_shape())
    return list(np.load(path, mmap_mode="r").shape)


def _check_index(index_path: Path, settings: dict) -> None:
    """A folder that holds features of other settings is not resumed into."""
    if not index_path.is_file():
        return
    try:
        previous = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{index_path} is not a readable index: {error}") from None
    old = previous.get("settings", {})
    changed = [key for key in settings if old.get(key) != settings[key]]
    if previous.get("format") != INDEX_FORMAT or changed:
        what = ", ".join(f"{k}: {old.get(k)!r} -> {settings[k]!r}" for k in changed[:3])
        raise ValueError(
            f"{index_path.parent} holds features of other settings ({what or 'another format'}): "
            "use another output folder, or remove it to start over"
        )


def _write_json(path: Path, document: dict) -> None:
    text = json.dumps(document, indent=2) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def extract_features(
    extractor: FeatureExtractor,
    source: VideoSource,
    out: str | Path,
    *,
    file_format: str = "safetensors",
    batch_size: int = 1,
    num_workers: int = 0,
    group: Distributed | None = None,
    progress: bool = False,
) -> ExtractionResult:
    """Write the features of every video of ``source`` into ``out`` and the index
    ``out/index.json`` (by the main process, at the end). Files are named by
    :func:`output_stem` and :func:`output_files`; a video whose files are all there is skipped.
    ``batch_size`` videos (each with all its views) go through the model at once. Every
    process of a ``torchrun`` group must call it; each extracts its share."""
    _check_choice("file_format", file_format, FILE_FORMATS)
    _positive("batch_size", batch_size)
    group = group or distributed.setup("cuda" if extractor.device.type == "cuda" else "cpu")
    out = Path(out)
    heads = extractor.heads()
    stems = [output_stem(Path(r.path), source.root) for r in source.records]
    files = [output_files(stem, heads, file_format) for stem in stems]
    owners: dict[str, str] = {}
    for record, names in zip(source.records, files, strict=True):
        for name in set(names.values()):
            if name in owners:
                raise ValueError(
                    f"{owners[name]} and {record.path} would both be written to {name}"
                )
            owners[name] = str(record.path)
    settings = {**extractor.settings(), "file_format": file_format, "heads": heads}
    index_path = out / "index.json"
    _check_index(index_path, settings)
    done = [all((out / name).is_file() for name in names.values()) for names in files]
    todo = [i for i, finished in enumerate(done) if not finished]
    distributed.barrier(group)  # every process has seen the same finished files
    if group.is_main and not index_path.is_file():
        # Settings first, so that a killed run is resumed only with the same ones.
        _write_json(index_path, {"format": INDEX_FORMAT, "settings": settings, "complete": False,
                                 "videos": [], "unreadable": []})  # fmt: skip

    dataset = extractor.dataset(source)
    loader = DataLoader(
        _FeatureItems(dataset, todo),
        batch_size=batch_size,
        sampler=ShardedSampler(len(todo), group.rank, group.world_size),
        num_workers=num_workers,
        collate_fn=collate_readable,
    )
    unreadable: list[UnreadableVideo] = []
    written = 0
    # safetensors metadata is text: strings as they are, anything else as JSON.
    common = {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in settings.items()
        if key in ("model", "checkpoint", "pretrained", "per", "spatial", "temporal", "clips",
                   "crops", "clip_len", "frame_interval", "sampling")
    }  # fmt: skip
    bar = tqdm(loader, desc="extracting", unit="batch", disable=not (progress and group.is_main))
    for batch, batch_unreadable in bar:
        for item in batch_unreadable:
            logger.warning("unreadable video %s: %s", item.path, item.reason)
        unreadable.extend(batch_unreadable)
        if batch is None:
            continue
        indices, views, frame_indices = batch
        features = extractor.features_of_views(views)
        for row, index in enumerate(indices.tolist()):
            metadata = {
                **common,
                "format": INDEX_FORMAT,
                "video": str(source.records[index].path),
                "frame_indices": json.dumps(frame_indices[row].tolist()),
            }
            per_video = {head: f[row] for head, f in features.items()}
            _write_video(out, files[index], per_video, metadata, file_format)
            written += 1

    written = int(distributed.sum_over_processes(group, written)[0])
    excluded = gather_unreadable(group, unreadable)
    if group.is_main:
        bad = {u.index for u in excluded}
        videos = []
        for index, record in enumerate(source.records):
            if index in bad:
                continue
            names = files[index]
            missing = [n for n in names.values() if not (out / n).is_file()]
            if missing:
                raise RuntimeError(f"{record.path}: {out / missing[0]} was not written")
            shapes = {head: _shape(out / name, head, file_format) for head, name in names.items()}
            videos.append({"video": str(record.path), "files": names, "shapes": shapes})
        _write_json(
            index_path,
            {
                "format": INDEX_FORMAT,
                "settings": settings,
                "complete": not excluded,
                "videos": videos,
                "unreadable": [{"video": u.path, "reason": u.reason} for u in excluded],
            },
        )
    distributed.barrier(group)
    return ExtractionResult(
        len(source.records), written, len(source.records) - len(todo), excluded, index_path
    )
