"""Pictures of what SIFA attends to (the paper's Figure 5), for a trained model and a video.

For each SIFA stage (the last SIFA block of each stage of the network) and a frame pair
``(t, t+1)`` of its feature maps, a figure shows:

1. frame ``t`` with the query points;
2. frame ``t+1`` with the ``k x k`` deformed sampling points of every query, in the query's
   colour, the marker's area proportional to the tap's absolute attention weight (relative to
   the query's largest; hollow markers for negative weights), the query's own position as ``+``;
3. the motion saliency map of the pair (the mean over channels of ``|M|``, scaled to [0, 1])
   over frame ``t+1``.

Everything is drawn in input pixels, the pixels of the network's input crop: feature pixel
``(y, x)`` of a map ``s_y`` times smaller than the input (``s_y = H_in / H``) is the input
position ``((y + 0.5) * s_y - 0.5, (x + 0.5) * s_x - 0.5)``, the centre of the input pixels it
covers, and a tap at fractional feature position maps the same way. Feature step ``t`` of a map
``s_t = T_in / T`` times shorter than the clip is drawn on input frame
``floor((t + 0.5) * s_t)``, the middle of the frames it covers. Attention weights are averaged
over channel groups (the groups share their offsets).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sifa.files import replace_atomically
from sifa.nn import InterFrameAttention, Internals

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


@dataclass
class QueryView:
    """One query point and its taps, in input pixels ``(y, x)``."""

    query: tuple[float, float]
    feature_position: tuple[int, int]
    samples: list[tuple[float, float]]
    weights: list[float]


@dataclass
class PairView:
    """Frame pair ``(t, t+1)`` of a stage's feature maps: the input frames it is drawn on
    (indices within the clip), the queries and the saliency map ``(H, W)`` in [0, 1]."""

    pair: int
    frames: tuple[int, int]
    queries: list[QueryView]
    saliency: np.ndarray = field(repr=False)


@dataclass
class StageView:
    """What one SIFA block of a stage attends to on a clip."""

    stage: str
    module: str
    feature_size: tuple[int, int, int]  # (T, H, W) of the block's input
    input_size: tuple[int, int, int]  # (T, H, W) of the clip
    stride: tuple[float, float, float]  # input pixels (frames) per feature pixel (step)
    kernel_size: int
    dilation: int
    pairs: list[PairView]

    def to_json(self) -> dict:
        data = asdict(self)
        for pair in data["pairs"]:
            del pair["saliency"]
        return data


def sifa_stages(model: nn.Module) -> dict[str, str]:
    """``{stage: module path}`` of the last SIFA block of every stage, in network order.

    A stage is the module path before the block index (``layer3`` for ``layer3.1.sifa``,
    ``layers.2`` for ``layers.2.blocks.4.sifa``)."""
    stages: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, InterFrameAttention):
            stages[_stage_of(name)] = name  # a later block of the same stage replaces it
    return stages


def _stage_of(module_path: str) -> str:
    parts = module_path.split(".")
    numeric = [i for i, part in enumerate(parts) if part.isdigit()]
    if not numeric:
        return module_path
    prefix = parts[: numeric[-1]]
    if len(prefix) > 1 and prefix[-1] == "blocks":
        prefix = prefix[:-1]
    return ".".join(prefix)


def resolve_stages(model: nn.Module, stages: list[str] | None) -> dict[str, str]:
    """The ``{stage: module path}`` to draw: all stages, or those named (a stage name or the
    path of any SIFA block)."""
    available = sifa_stages(model)
    if not available:
        raise ValueError(f"{type(model).__name__} has no SIFA block: nothing to visualize")
    if not stages:
        return available
    blocks = {n for n, m in model.named_modules() if isinstance(m, InterFrameAttention)}
    chosen = {}
    for name in stages:
        if name in available:
            chosen[name] = available[name]
        elif name in blocks:
            chosen[name] = name
        else:
            raise ValueError(
                f"no SIFA stage or block {name!r}; stages: {', '.join(available)} (or a block "
                f"path such as {next(iter(blocks))!r})"
            )
    return chosen


def capture(
    model: nn.Module, clip: torch.Tensor, modules: list[str]
) -> tuple[torch.Tensor, dict[str, tuple[Internals | None, tuple[int, ...]]]]:
    """Run ``model`` on ``clip`` and return its output and, for each SIFA block in
    ``modules``, the block's :class:`~sifa.nn.Internals` on its input (``None`` for an input
    of one time step: no frame pair) and the input's shape."""
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    for name in modules:

        def record(_module, args, name=name):
            inputs[name] = args[0]

        handles.append(model.get_submodule(name).register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            output = model(clip)
    finally:
        for handle in handles:
            handle.remove()
    captured = {}
    for name in modules:
        x = inputs[name]
        internals = model.get_submodule(name).internals(x) if x.shape[2] >= 2 else None
        captured[name] = (internals, tuple(x.shape))
    return output, captured


def feature_to_input(position: float, stride: float) -> float:
    """Input-pixel coordinate of a (fractional) feature-pixel coordinate on a map ``stride``
    times smaller: the centre of the input pixels the feature pixel covers."""
    return (position + 0.5) * stride - 0.5


def input_to_feature(position: float, stride: float, size: int) -> int:
    """The feature pixel whose input pixels contain input coordinate ``position``."""
    return min(max(math.floor((position + 0.5) / stride), 0), size - 1)


def saliency_maps(internals: Internals) -> torch.Tensor:
    """``(T-1, H, W)`` mean ``|M|`` over channels of the first clip, each pair scaled to
    [0, 1]."""
    heat = internals.saliency[0].abs().mean(0).float()
    low = heat.amin(dim=(1, 2), keepdim=True)
    high = heat.amax(dim=(1, 2), keepdim=True)
    return (heat - low) / (high - low).clamp_min(1e-12)


def pick_queries(heat: torch.Tensor, count: int, spacing: int = 2) -> list[tuple[int, int]]:
    """The ``count`` most salient feature positions of ``heat`` ``(H, W)``, each at least
    ``spacing`` feature pixels (Chebyshev) from the others; fewer on a small map."""
    width = heat.shape[1]
    order = torch.argsort(heat.flatten(), descending=True, stable=True).tolist()
    chosen: list[tuple[int, int]] = []
    for index in order:
        y, x = divmod(index, width)
        if all(max(abs(y - cy), abs(x - cx)) >= spacing for cy, cx in chosen):
            chosen.append((y, x))
            if len(chosen) == count:
                break
    return chosen


def stage_view(
    stage: str,
    module: InterFrameAttention,
    module_path: str,
    internals: Internals,
    feature_shape: tuple[int, ...],
    input_size: tuple[int, int, int],
    *,
    points: int = 4,
    queries: list[tuple[float, float]] | None = None,
) -> StageView:
    """Coordinates of one stage's queries and taps in input pixels, for every frame pair.

    ``queries`` are input-pixel positions ``(y, x)`` (each moved to the feature pixel that
    contains it); without them, the ``points`` most salient positions over the whole clip."""
    _, _, t, h, w = feature_shape
    stride = (input_size[0] / t, input_size[1] / h, input_size[2] / w)
    k, d = module.kernel_size, module.dilation
    heat = saliency_maps(internals)
    if queries:
        positions = [
            (input_to_feature(y, stride[1], h), input_to_feature(x, stride[2], w))
            for y, x in queries
        ]
    else:
        positions = pick_queries(heat.mean(0), points)
    taps = torch.arange(k, dtype=torch.float64) * d - (k - 1) / 2 * d
    tap_y, tap_x = taps.repeat_interleave(k), taps.repeat(k)  # tap n = i*k + j
    offsets = internals.offsets[0].double()  # (T-1, k*k, 2, H, W)
    weights = internals.weights[0].double().mean(1)  # (T-1, k*k, H, W), groups averaged
    pairs = []
    for pair in range(t - 1):
        frames = tuple(_input_frame(step, stride[0], input_size[0]) for step in (pair, pair + 1))
        views = []
        for fy, fx in positions:
            sample_y = fy + tap_y + offsets[pair, :, 0, fy, fx]
            sample_x = fx + tap_x + offsets[pair, :, 1, fy, fx]
            views.append(
                QueryView(
                    query=(feature_to_input(fy, stride[1]), feature_to_input(fx, stride[2])),
                    feature_position=(fy, fx),
                    samples=[
                        (feature_to_input(sy, stride[1]), feature_to_input(sx, stride[2]))
                        for sy, sx in zip(sample_y.tolist(), sample_x.tolist(), strict=True)
                    ],
                    weights=[float(v) for v in weights[pair, :, fy, fx]],
                )
            )
        pairs.append(PairView(pair, frames, views, heat[pair].numpy()))
    return StageView(stage, module_path, (t, h, w), input_size, stride, k, d, pairs)


def _input_frame(step: int, stride: float, frames: int) -> int:
    """The clip frame a feature step is drawn on: the middle of the frames it covers."""
    return min(frames - 1, math.floor((step + 0.5) * stride))


def explain_clip(
    model: nn.Module,
    clip: torch.Tensor,
    *,
    stages: list[str] | None = None,
    points: int = 4,
    queries: list[tuple[float, float]] | None = None,
) -> tuple[torch.Tensor, list[StageView]]:
    """``(output, views)`` of ``model`` (in eval mode) on one normalised clip
    ``(1, 3, T, H, W)``: one :class:`StageView` per chosen SIFA stage. Stages whose feature
    maps have a single time step are left out (an error when asked for by name)."""
    if clip.dim() != 5 or clip.shape[0] != 1:
        raise ValueError(f"expected one clip (1, 3, T, H, W), got shape {tuple(clip.shape)}")
    if points < 1:
        raise ValueError(f"points must be at least 1, got {points}")
    model.eval()
    chosen = resolve_stages(model, stages)
    output, captured = capture(model, clip, list(chosen.values()))
    input_size = tuple(clip.shape[2:])
    views = []
    for stage, path in chosen.items():
        internals, shape = captured[path]
        if internals is None:
            if stages:  # asked for by name
                raise ValueError(
                    f"stage {stage} sees 1 time step for a {input_size[0]}-frame clip: no "
                    "frame pair to draw; use a longer clip or another stage"
                )
            continue  # e.g. the dual res5 branch of a short clip
        block = model.get_submodule(path)
        views.append(
            stage_view(
                stage, block, path, internals, shape, input_size, points=points, queries=queries
            )
        )
    if not views:
        raise ValueError(f"no SIFA stage sees 2 time steps for a {input_size[0]}-frame clip")
    return output, views


# ---------------------------------------------------------------------------------------------
# Drawing


def draw_pair(view: StageView, pair: PairView, frames: np.ndarray, title: str = ""):
    """The three-panel figure of one frame pair; ``frames`` is the clip as RGB ``(T, H, W, 3)``
    in [0, 1]. Returns a matplotlib ``Figure`` (no pyplot)."""
    from sifa.engine.metrics import new_figure

    figure = new_figure(12, 4.4)
    axes = figure.subplots(1, 3)
    first, second = pair.frames
    height, width = frames.shape[1:3]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    axes[0].imshow(frames[first], extent=extent)
    axes[0].set_title(f"frame {first}: queries")
    axes[1].imshow(frames[second], extent=extent)
    outside = sum(
        not (-0.5 <= y <= height - 0.5 and -0.5 <= x <= width - 0.5)
        for query in pair.queries
        for y, x in query.samples
    )
    note = f", {outside} outside the frame" if outside else ""
    axes[1].set_title(f"frame {second}: sampling points (area ~ |weight|{note})")
    axes[2].imshow(frames[second], extent=extent)
    axes[2].imshow(pair.saliency, extent=extent, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    axes[2].set_title("motion saliency")
    for index, query in enumerate(pair.queries):
        colour = PALETTE[index % len(PALETTE)]
        axes[0].scatter([query.query[1]], [query.query[0]], s=90, c=colour,
                        edgecolors="white", linewidths=1.5, gid=f"query{index}")  # fmt: skip
        largest = max(abs(w) for w in query.weights) or 1.0
        sizes = [15 + 160 * abs(w) / largest for w in query.weights]
        ys, xs = zip(*query.samples, strict=True)
        faces = [colour if w >= 0 else "none" for w in query.weights]
        axes[1].scatter(xs, ys, s=sizes, c=faces, edgecolors=colour, linewidths=1.2,
                        gid=f"samples{index}")  # fmt: skip
        axes[1].scatter([query.query[1]], [query.query[0]], s=60, c=colour, marker="+",
                        linewidths=1.5, gid=f"centre{index}")  # fmt: skip
    for axis in axes:
        axis.set_xlim(extent[0], extent[1])
        axis.set_ylim(extent[2], extent[3])
        axis.set_xticks([])
        axis.set_yticks([])
    stride = " x ".join(f"{s:g}" for s in view.stride)
    figure.suptitle(
        f"{view.stage} ({view.module}): feature map {view.feature_size[1]}x"
        f"{view.feature_size[2]}, stride {stride} (t, y, x), pair {pair.pair}" + title
    )
    return figure


def _figure_rgb(figure) -> np.ndarray:
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def write_gif(view: StageView, frames: np.ndarray, path: Path, title: str = "") -> Path:
    """An animated GIF of every frame pair of a stage, half a second each."""
    from PIL import Image

    images = [Image.fromarray(_figure_rgb(draw_pair(view, pair, frames, title)))
              for pair in view.pairs]  # fmt: skip

    def write(temporary: Path) -> None:
        images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:],
                       duration=500, loop=0)  # fmt: skip

    replace_atomically(path, write)
    return path


def safe_name(stage: str) -> str:
    """A file name for a stage or block path."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stage)


# ---------------------------------------------------------------------------------------------
# From a video and a checkpoint


def read_clip(video: str | Path, config, *, start: int | None = None, backend: str = "pyav"):
    """``(clip, frames, indices)`` for a model trained with ``config``: the normalised network
    input ``(1, 3, T, S, S)`` (one centre crop of ``data.test_crop_size`` after resizing the
    short side to ``data.test_short_side``), the same crop as RGB ``(T, S, S, 3)`` in [0, 1],
    and the video frame indices. ``start`` is the first frame (default: the centre clip)."""
    from sifa.data.decoding import open_video
    from sifa.engine.builders import build_eval_transform, build_sampler

    data = config.data
    with open_video(video, backend) as reader:
        count = reader.info.num_frames
        if start is None:
            indices = build_sampler(config, training=False)(count)[0]
        elif data.sampling != "dense":
            raise ValueError(
                f"a start frame needs dense sampling; this model samples {data.sampling}s "
                "(leave the start out)"
            )
        else:
            indices = start + np.arange(data.clip_len) * data.frame_interval
            if start < 0 or indices[-1] >= count:
                raise ValueError(
                    f"{video}: a clip of {data.clip_len} frames {data.frame_interval} apart from "
                    f"frame {start} needs frames up to {indices[-1]}, the video has {count}"
                )
        raw = reader.read(indices)
    transform = build_eval_transform(config, crops=1)
    clip = transform(raw)  # (3, T, S, S)
    mean = torch.tensor(data.mean).view(3, 1, 1, 1)
    std = torch.tensor(data.std).view(3, 1, 1, 1)
    rgb = (clip * std + mean).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    return clip.unsqueeze(0), rgb, [int(i) for i in indices]


def visualize_video(
    video: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    *,
    stages: list[str] | None = None,
    points: int = 4,
    queries: list[tuple[float, float]] | None = None,
    pair: int = 0,
    gif: bool = False,
    start: int | None = None,
    backend: str = "pyav",
) -> dict:
    """Write ``OUT/STAGE.png`` (frame pair ``pair``) per SIFA stage, ``OUT/STAGE.gif`` (every
    pair) with ``gif``, and ``OUT/points.json`` (every coordinate and weight drawn, the
    prediction, the frame indices). Returns the summary written to ``points.json``."""
    from sifa.engine.checkpoint import load_model
    from sifa.engine.metrics import save_png

    model, config, class_names = load_model(checkpoint)
    clip, frames, indices = read_clip(video, config, start=start, backend=backend)
    output, views = explain_clip(model, clip, stages=stages, points=points, queries=queries)
    probabilities = output.float().softmax(-1)[0]
    top = probabilities.topk(min(3, len(class_names)))
    prediction = [
        {"label": class_names[i], "score": round(float(s), 4)}
        for s, i in zip(top.values, top.indices, strict=True)
    ]
    best = prediction[0]
    title = f"\n{Path(video).name}: predicted {best['label']} ({best['score']:.2f})"
    out = Path(out)
    files = []
    for view in views:
        if not 0 <= pair < len(view.pairs):
            raise ValueError(
                f"pair {pair} does not exist at stage {view.stage}: it has {len(view.pairs)} "
                f"frame pair(s) (0 to {len(view.pairs) - 1})"
            )
        name = safe_name(view.stage)
        figure = draw_pair(view, view.pairs[pair], frames, title)
        files.append(save_png(figure, out / f"{name}.png"))
        if gif:
            files.append(write_gif(view, frames, out / f"{name}.gif", title))
    summary = {
        "video": str(video),
        "checkpoint": str(checkpoint),
        "model": config.model.name,
        "frame_indices": indices,
        "prediction": prediction,
        "coordinates": "input pixels (y, x) of the network's input crop",
        "stages": [view.to_json() for view in views],
    }
    points_file = out / "points.json"
    replace_atomically(points_file, lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    summary["files"] = [str(f) for f in [*files, points_file]]
    return summary
