"""A dataset of clips: records -> decode -> sample -> transform -> ``(clip, label)``."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sifa.data.annotations import AnnotationError, DatasetSpec, VideoRecord, load_annotations
from sifa.data.decoding import FrameFolderReader, VideoError, VideoReader, open_video
from sifa.data.sampling import DenseSampler

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "skip")


@dataclass(frozen=True)
class UnreadableVideo:
    """An evaluation item whose video cannot be read (see
    :meth:`VideoClipDataset.evaluation_item`): its index, its path and why (the
    :class:`VideoError`'s problem)."""

    index: int
    path: str
    reason: str


class VideoClipDataset(Dataset):
    """Clips of videos with their labels.

    Each item decodes only the frames the ``sampler`` picks, applies ``transform`` to every
    sampled clip and returns ``(clip, label)``. With ``multi_view=True`` the clip is
    ``(views, ...)``: every clip of a multi-clip sampler, times every crop of a multi-crop
    transform (clips outer, crops inner), as multi-view testing needs.

    Randomness (sampling and transforms) is seeded per item from ``(seed, epoch, index)``, so
    an epoch is the same whatever the number of workers; call :meth:`set_epoch` before each
    epoch (it reaches persistent workers too).

    ``cache_videos=True`` decodes each video whole once and keeps its frames in memory (in each
    worker process), for small datasets that are read many times, like the synthetic demo's.

    ``on_error="skip"`` replaces an item whose video cannot be read (a :class:`VideoError`:
    missing, empty, truncated, undecodable) by the next readable one, logs each bad file once
    and counts the skips across workers (:attr:`skip_count`, :meth:`reset_skips`). Other errors,
    such as a crop larger than the video, always raise. Replacing suits training only:
    evaluation reads items with :meth:`evaluation_item`, which never substitutes.
    """

    def __init__(
        self,
        records: list[VideoRecord],
        class_names: list[str],
        *,
        sampler: Callable | None = None,
        transform: Callable | None = None,
        backend: str = "pyav",
        reader_options: dict | None = None,
        multi_view: bool = False,
        on_error: str = "raise",
        seed: int = 0,
        max_substitutes: int = 10,
        cache_videos: bool = False,
    ) -> None:
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        if not records:
            raise ValueError("a dataset needs at least one video")
        self.records = list(records)
        self.class_names = list(class_names)
        self.sampler = sampler or DenseSampler()
        self.transform = transform
        self.backend = backend
        self.reader_options = dict(reader_options or {})
        self.multi_view = multi_view
        self.on_error = on_error
        self.seed = seed
        self.max_substitutes = max_substitutes
        self.cache_videos = cache_videos
        self._cache: dict[int, torch.Tensor] = {}  # index -> every frame, uint8 (T, H, W, 3)
        # Shared with DataLoader workers: the epoch, the skip count and which files were logged.
        self._epoch = multiprocessing.Value("q", 0)
        self._skips = multiprocessing.Value("q", 0)
        self._logged = multiprocessing.Array("b", len(self.records))

    @classmethod
    def from_spec(cls, spec: DatasetSpec, **options) -> VideoClipDataset:
        """The dataset a :class:`DatasetSpec` describes; ``options`` as for the constructor. A
        missing root folder is one error here, not a warning per video later."""
        records, class_names = load_annotations(spec)
        if spec.format != "folder" and not Path(spec.root).is_dir():
            raise AnnotationError(f"data root folder not found: {spec.root} (the videos of "
                                  f"{spec.annotations} are found under it)")  # fmt: skip
        if spec.backend == "frames":
            options.setdefault("reader_options", {}).update(
                template=spec.frame_template, start_index=spec.frame_start_index
            )
        return cls(records, class_names, backend=spec.backend, **options)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    @property
    def skip_count(self) -> int:
        """Items replaced by another since the last :meth:`reset_skips`, over all workers."""
        return self._skips.value

    def reset_skips(self) -> None:
        self._skips.value = 0

    def open(self, record: VideoRecord) -> VideoReader:
        """A reader for one record with this dataset's backend and options."""
        if self.backend == "frames":
            return FrameFolderReader(
                record.path, num_frames=record.num_frames, **self.reader_options
            )
        return open_video(record.path, self.backend, **self.reader_options)

    def _item_seed(self, index: int) -> int:
        state = np.random.SeedSequence([self.seed, self._epoch.value, index]).generate_state(2)
        return int(state[0]) << 32 | int(state[1])

    def load(self, index: int):
        """``(clip, label)`` of item ``index``, raising :class:`VideoError` on a bad video."""
        record = self.records[index]
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed would also queue a costly CUDA seeding.
            torch.default_generator.manual_seed(self._item_seed(index))
            if self.cache_videos:
                video = self._cached(index)
                indices = self.sampler(len(video))
                frames = video[torch.from_numpy(indices.reshape(-1))]
            else:
                with self.open(record) as reader:
                    indices = self.sampler(record.num_frames or reader.info.num_frames)
                    frames = reader.read(indices.reshape(-1))
            clips = frames.view(*indices.shape, *frames.shape[1:])
            views = [self.transform(clip) if self.transform else clip for clip in clips]
        if not self.multi_view:
            if len(views) != 1:
                raise ValueError(
                    f"the sampler gives {len(views)} clips per video: use multi_view=True"
                )
            return views[0], record.label
        # A multi-crop transform returns (crops, C, T, H, W); a single crop (C, T, H, W).
        return torch.cat([v.unsqueeze(0) if v.dim() == 4 else v for v in views]), record.label

    def cached_indices(self) -> list[int]:
        """The items whose videos ``cache_videos`` holds in this process, in index order."""
        return sorted(self._cache)

    def _cached(self, index: int) -> torch.Tensor:
        """Every frame of video ``index``, decoded on first use."""
        if index not in self._cache:
            record = self.records[index]
            with self.open(record) as reader:
                self._cache[index] = reader.read(range(record.num_frames or reader.info.num_frames))
        return self._cache[index]

    def _log_once(self, index: int, error: VideoError) -> None:
        with self._logged.get_lock():
            first_time = not self._logged[index]
            self._logged[index] = True
        if first_time:
            logger.warning("skipping unreadable video %s", error)

    def __getitem__(self, index: int):
        if self.on_error == "raise":
            return self.load(index)
        for attempt in range(self.max_substitutes + 1):
            candidate = (index + attempt) % len(self)
            try:
                item = self.load(candidate)
            except VideoError as error:
                self._log_once(candidate, error)
                last_error = error
                continue
            if attempt:
                with self._skips.get_lock():
                    self._skips.value += 1
            return item
        raise VideoError(
            last_error.path,
            f"{last_error.problem}; and the {self.max_substitutes} videos after item {index} "
            "could not be read either",
        )

    def evaluation_item(self, index: int):
        """Item ``index`` for evaluation: ``(clip, label)``, or, when its video cannot be read
        and ``on_error="skip"``, an :class:`UnreadableVideo` marker, so that the video is left
        out of the metrics instead of being scored as a copy of another one (nothing is logged
        or counted: the caller lists the markers). With ``on_error="raise"`` the
        :class:`VideoError` propagates."""
        try:
            return self.load(index)
        except VideoError as error:
            if self.on_error == "raise":
                raise
            path = str(self.records[index].path)
            return UnreadableVideo(index, path, error.problem if error.path == path else str(error))

    def skipped_files(self) -> list[str]:
        """Files that were skipped at least once (logged), over all workers."""
        return [str(r.path) for r, logged in zip(self.records, self._logged, strict=True) if logged]
