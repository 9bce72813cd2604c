"""Video data: decoding, dataset formats, clip sampling, clip transforms, synthetic data.

Data flows one way: annotation file -> :class:`VideoRecord` -> reader (decode only the sampled
frames) -> sampler indices -> transform -> ``(clip, label)``.
"""

from sifa.data.annotations import (
    FORMATS,
    AnnotationError,
    DatasetSpec,
    VideoRecord,
    load_annotations,
)
from sifa.data.datasets import UnreadableVideo, VideoClipDataset
from sifa.data.decoding import (
    EmptyVideoError,
    VideoDecodeError,
    VideoError,
    VideoInfo,
    VideoNotFoundError,
    open_video,
)
from sifa.data.loader import make_loader, seed_worker, set_epoch
from sifa.data.presets import eval_transform, train_transform
from sifa.data.rand_augment import AugmentOp, RandAugment, RandAugmentParams
from sifa.data.sampling import DenseSampler, SegmentSampler
from sifa.data.transforms import RandomErasing

__all__ = [
    "FORMATS",
    "AnnotationError",
    "AugmentOp",
    "DatasetSpec",
    "DenseSampler",
    "EmptyVideoError",
    "RandAugment",
    "RandAugmentParams",
    "RandomErasing",
    "SegmentSampler",
    "UnreadableVideo",
    "VideoClipDataset",
    "VideoDecodeError",
    "VideoError",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoRecord",
    "eval_transform",
    "load_annotations",
    "make_loader",
    "open_video",
    "seed_worker",
    "set_epoch",
    "train_transform",
]
