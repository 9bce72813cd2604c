"""Predictions drawn on video frames: the top-k labels and scores in a semi-transparent box."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sifa.files import replace_atomically


@functools.cache
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


MIN_FONT = 6  # pixels: below this no text is legible anyway


def _fit(lines: tuple[str, ...], width: int, height: int):
    """The font for ``lines`` and the lines themselves, fitted to a frame ``width`` wide: the
    size follows the height (``H / 24``, at least 10 pixels) and shrinks (to 6 at least) until the
    longest line fits; labels still too long then lose their end to an ellipsis."""
    size = max(10, round(height / 24))
    while True:
        font = _font(size)
        margin = max(2, size // 4)
        room = width - 3 * margin  # the margins of the text and of its box
        if size <= MIN_FONT or max(font.getlength(line) for line in lines) <= room:
            break
        size -= 1
    fitted = []
    for line in lines:
        label, _, score = line.rpartition(" ")
        while label and font.getlength(f"{label}\u2026 {score}") > room:
            label = label[:-1]
        fitted.append(line if font.getlength(line) <= room else f"{label}\u2026 {score}")
    return font, margin, fitted


@functools.lru_cache(maxsize=64)
def _label_box(lines: tuple[str, ...], width: int, height: int):
    """The RGBA overlay of ``lines`` for a ``width x height`` frame, cropped to its box: made
    once per label set and frame size (a window's labels stay on many frames)."""
    from PIL import Image, ImageDraw

    font, margin, fitted = _fit(lines, width, height)
    text = "\n".join(fitted)
    measure = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    _, _, right, bottom = measure.multiline_textbbox((margin, margin), text, font=font,
                                                     spacing=margin)  # fmt: skip
    box_right, box_bottom = math.ceil(right + margin), math.ceil(bottom + margin)
    overlay = Image.new("RGBA", (min(box_right + 1, width), min(box_bottom + 1, height)))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((0, 0, box_right, box_bottom), fill=(0, 0, 0, 150))
    draw.multiline_text((margin, margin), text, font=font, fill=(255, 255, 255, 255),
                        spacing=margin)  # fmt: skip
    return overlay


def draw_predictions(frame: np.ndarray, top: Sequence[dict]) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` ``frame`` with one ``label score`` line per entry of ``top``
    (``[{"label", "score"}]``, best first) in white on a dark, semi-transparent box at the top
    left; the font size follows the frame height (``H / 24``, at least 10 pixels), smaller (to 6
    pixels) where a line would not fit the width, and a label that still does not fit is cut
    short with an ellipsis."""
    from PIL import Image

    if not top:
        return frame
    height, width = frame.shape[:2]
    lines = tuple(f"{entry['label']} {entry['score']:.2f}" for entry in top)
    overlay = _label_box(lines, width, height)
    w, h = overlay.size
    region = Image.fromarray(np.ascontiguousarray(frame[:h, :w])).convert("RGBA")
    drawn = np.array(frame, copy=True)
    drawn[:h, :w] = np.asarray(Image.alpha_composite(region, overlay).convert("RGB"))
    return drawn


def even_crop(frame: np.ndarray) -> np.ndarray:
    """``frame`` without its last row and column where their count is odd (yuv420p needs even
    sizes)."""
    height, width = frame.shape[:2]
    return frame[: height - height % 2, : width - width % 2]


def write_annotated_video(
    video: str | os.PathLike,
    out: str | os.PathLike,
    top_of_frame: Callable[[int], Sequence[dict]],
) -> int:
    """Decode ``video`` frame by frame, draw ``top_of_frame(index)`` on each frame and write
    the result to ``out`` (H.264 ``yuv420p`` at the input's frame rate, one output frame per
    input frame; an odd height or width loses its last row or column; no audio), atomically.
    Returns the number of frames written."""
    import av
    from av.video.reformatter import VideoReformatter

    from sifa.data.decoding import VideoDecodeError
    from sifa.data.encoding import H264Writer

    written = 0

    def write(temporary: Path) -> None:
        nonlocal written
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise VideoDecodeError(video, "has no frame rate to write the annotated video at")
            writer, to_rgb = None, VideoReformatter()
            try:
                for index, frame in enumerate(container.decode(stream)):
                    rgb = even_crop(to_rgb.reformat(frame, format="rgb24").to_ndarray())
                    if writer is None:
                        height, width = rgb.shape[:2]
                        writer = H264Writer(temporary, rate=rate, height=height, width=width,
                                            format="mp4")  # fmt: skip
                    writer.write(draw_predictions(rgb, top_of_frame(index)))
                    written = index + 1
            except BaseException as error:
                if writer is not None:
                    writer.__exit__(type(error), error, error.__traceback__)
                raise
            if writer is not None:
                writer.close()
        if writer is None:
            raise VideoDecodeError(video, "holds no frames to annotate")

    replace_atomically(Path(out), write)
    return written
