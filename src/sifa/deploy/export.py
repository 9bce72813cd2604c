"""Export a video model to ONNX or to a ``torch.export`` program, with a dynamic batch.

Both start from one :func:`torch.export.export` trace of the model in eval mode on a clip of
fixed length and size; the batch dimension stays symbolic. The SIFA operator is a custom op in
that trace:

- for ONNX it is rewritten by :func:`sifa.ops.decompositions` into standard operators
  (``GridSample`` for the deformed sampling, ``Einsum``/``MatMul`` for the attention), so the
  file runs in any ONNX runtime with no custom operator or plugin;
- a ``torch.export`` program keeps the fused op by default (load it after ``import sifa``,
  which registers ``torch.ops.sifa``), or is decomposed the same way (``decompose=True``) into a
  program that plain PyTorch loads and runs.

Files are written atomically, and each export is checked by running the written file on a clip
of another batch size and comparing it with the model in PyTorch.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sifa.files import replace_atomically
from sifa.ops import decompositions

FORMATS = ("onnx", "torch-export")
SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2"}
INPUT_NAME = "clip"
OUTPUT_NAME = "logits"
# What an export's check allows between the written file and the model in PyTorch, on logits:
# float32 through other kernels (and the decomposition's grid_sample) rounds differently.
CHECK_ATOL = 1e-3
CHECK_RTOL = 1e-3
_EXAMPLE_BATCH = 2  # a batch of 1 would let torch.export specialise the batch dimension
_CHECK_BATCH = 3
# Metadata an export stores (strings) and load_program reads back.
METADATA_KEYS = ("model", "class_names", "preprocessing", "input")


class ExportError(ValueError):
    """An export that cannot be made, or whose file does not reproduce the model."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how well the file reproduces the model.

    ``max_abs_diff`` is the largest difference between the file's and PyTorch's logits on a
    random clip of batch ``checked_batch`` (``None`` when the check did not run, and
    ``check_note`` says why)."""

    path: Path
    format: str
    input_shape: tuple[int | str, ...]
    seconds: float
    max_abs_diff: float | None = None
    checked_batch: int | None = None
    check_note: str = ""


def example_clip(frames: int, size: int, batch: int = _EXAMPLE_BATCH, seed: int = 0):
    """A random clip ``(batch, 3, frames, size, size)`` in float32."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, frames, size, size, generator=generator)


def export_checkpoint(
    checkpoint: str | Path,
    *,
    format: str,
    frames: int | None = None,
    size: int | None = None,
    out: str | Path | None = None,
    decompose: bool | None = None,
    optimize: bool = True,
    check: bool = True,
) -> ExportResult:
    """Export a training checkpoint (a ``.safetensors`` file, a run folder, a model folder or
    ``hf-hub:ORG/NAME``).

    ``frames`` and ``size`` default to the checkpoint's ``data.clip_len`` and
    ``data.test_crop_size``; ``out`` to ``RUN/export/MODEL_FRAMESxSIZE.onnx`` (or ``.pt2``;
    ``./export/...`` for a model folder).
    The file carries the model name, class names, preprocessing and input layout as
    metadata (see :data:`METADATA_KEYS`)."""
    from sifa.engine.checkpoint import default_output_folder, load_model, resolve_checkpoint

    _check_format(format)
    path = resolve_checkpoint(checkpoint)
    model, config, class_names = load_model(path)
    data = config.data
    frames = data.clip_len if frames is None else frames
    size = data.test_crop_size if size is None else size
    if out is None:
        out = default_output_folder(path) / "export" / f"{config.model.name}_{frames}x{size}"
        out = out.with_suffix(SUFFIXES[format])
    metadata = {
        "model": config.model.name,
        "class_names": json.dumps(list(class_names)),
        "preprocessing": json.dumps(
            {
                "sampling": data.sampling,
                "frame_interval": data.frame_interval,
                "short_side": data.test_short_side,
                "crop_size": data.test_crop_size,
                "mean": list(data.mean),
                "std": list(data.std),
                "pixel_range": "RGB in [0, 1] before mean and std",
            }
        ),
        "input": json.dumps(
            {
                "name": INPUT_NAME,
                "layout": "N,C,T,H,W",
                "shape": ["batch", 3, frames, size, size],
                "dtype": "float32",
                "output": f"{OUTPUT_NAME} (batch, {len(class_names)})",
            }
        ),
    }
    return export_model(
        model, out, format=format, frames=frames, size=size, decompose=decompose,
        optimize=optimize, check=check, metadata=metadata,
    )  # fmt: skip


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    format: str,
    frames: int,
    size: int,
    decompose: bool | None = None,
    optimize: bool = True,
    check: bool = True,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Export ``model`` (put in eval mode) for clips ``(batch, 3, frames, size, size)``.

    Args:
        format: ``"onnx"`` or ``"torch-export"`` (a ``.pt2`` file of
            :func:`torch.export.save`).
        decompose: replace the SIFA op by standard aten ops. Always on for ONNX; off by
            default for ``torch-export`` (the program keeps the fused op and needs
            ``import sifa`` to load).
        optimize: let the ONNX exporter fold constants and fuse (ONNX only).
        check: run the written file on a random clip of batch 3 and compare with PyTorch;
            a difference above ``atol=1e-3, rtol=1e-3`` raises :class:`ExportError`.
        metadata: strings stored in the file (ONNX ``metadata_props``; ``extra_files`` of a
            ``.pt2``), e.g. class names and preprocessing.
    """
    _check_format(format)
    if decompose is False and format == "onnx":
        raise ExportError("ONNX has no SIFA operator: an ONNX export is always decomposed")
    for name, value in (("frames", frames), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ExportError(f"{name} must be a positive integer, got {value!r}")
    if format == "onnx":
        _check_onnx_packages()  # before the minute of tracing, not after
    path = Path(path)
    started = time.perf_counter()
    model = model.eval()
    clip = example_clip(frames, size)
    program = trace(model, clip)
    if format == "onnx" or decompose:
        program = decompose_program(program)
    if format == "onnx":
        write_onnx(program, clip, path, optimize=optimize, metadata=metadata or {})
    else:
        write_program(program, path, metadata=metadata or {})
    result = ExportResult(
        path=path,
        format=format,
        input_shape=("batch", 3, frames, size, size),
        seconds=time.perf_counter() - started,
    )
    if check:
        check_export(model, result, frames=frames, size=size)
    return result


def trace(model: nn.Module, clip: torch.Tensor) -> torch.export.ExportedProgram:
    """:func:`torch.export.export` of ``model`` on ``clip`` with a symbolic batch dimension."""
    check_input = getattr(model, "check_input", None)
    try:
        if check_input is not None:
            check_input(clip)  # a clip the model refuses: its own message, not a trace error
    except ValueError as error:
        shape = tuple(clip.shape)
        raise ExportError(f"the model cannot take clips of shape {shape}: {error}") from None
    batch = torch.export.Dim("batch", min=1)
    with _quiet_torch(), torch.no_grad():
        return torch.export.export(model, (clip,), dynamic_shapes=({0: batch},), strict=False)


def decompose_program(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with the SIFA op rewritten into standard aten ops (and PyTorch's own
    default decompositions applied)."""
    table = torch.export.default_decompositions()
    table.update(decompositions())
    with _quiet_torch():
        return program.run_decompositions(table)


def write_onnx(
    program: torch.export.ExportedProgram,
    clip: torch.Tensor,
    path: Path,
    *,
    optimize: bool,
    metadata: dict[str, str],
) -> None:
    _check_onnx_packages()
    with _quiet_torch():
        onnx_program = torch.onnx.export(
            program,
            (clip,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            optimize=optimize,
            verbose=False,
        )
    model = onnx_program.model
    _name_batch_dimension(model)
    for key, value in metadata.items():
        model.metadata_props[key] = value
    replace_atomically(path, lambda temporary: onnx_program.save(str(temporary)))


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, got {format!r}")


def _check_onnx_packages() -> None:
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(
            f"ONNX export needs the {' and '.join(missing)} package(s): "
            "pip install 'sifa[export]' (or pip install onnx onnxscript onnxruntime)"
        )


def _name_batch_dimension(model) -> None:
    """Call the symbolic first dimension of the graph's inputs and outputs ``batch`` (the
    exporter names it after an internal symbol such as ``s77``)."""
    import onnx_ir as ir

    for value in (*model.graph.inputs, *model.graph.outputs):
        if value.shape is not None and len(value.shape) and not isinstance(value.shape[0], int):
            value.shape = ir.Shape(["batch", *list(value.shape)[1:]])


def write_program(
    program: torch.export.ExportedProgram, path: Path, *, metadata: dict[str, str]
) -> None:
    extra_files = {f"sifa/{key}": value for key, value in metadata.items()}
    replace_atomically(
        path, lambda temporary: torch.export.save(program, temporary, extra_files=extra_files)
    )


def load_program(path: str | Path) -> tuple[torch.export.ExportedProgram, dict[str, str]]:
    """``(program, metadata)`` of a ``.pt2`` written by :func:`export_model`. Call
    ``program.module()(clip)`` to run it. A program that keeps the SIFA op needs ``sifa``
    imported (this function does that)."""
    import sifa.ops.library  # noqa: F401  (registers torch.ops.sifa for the loaded graph)

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"program not found: {path}")
    extra_files = {f"sifa/{key}": "" for key in METADATA_KEYS}
    try:
        with _quiet_torch():
            program = torch.export.load(path, extra_files=extra_files)
    except Exception as error:  # torch raises many kinds for a damaged archive
        raise ExportError(f"{path} is not a readable torch.export program: {error}") from error
    metadata = {key.removeprefix("sifa/"): value for key, value in extra_files.items() if value}
    return program, metadata


def check_export(model: nn.Module, result: ExportResult, *, frames: int, size: int) -> None:
    """Run the written file on a random clip of another batch size, compare with ``model``,
    and fill ``result``'s check fields; raise :class:`ExportError` past the tolerance."""
    clip = example_clip(frames, size, batch=_CHECK_BATCH, seed=1)
    run = _runner(result)
    if run is None:
        result.check_note = "not checked: onnxruntime is not installed"
        return
    with torch.no_grad():
        expected = model(clip)
    actual = run(clip)
    difference = (actual - expected).abs()
    result.max_abs_diff = float(difference.max())
    result.checked_batch = _CHECK_BATCH
    allowed = CHECK_ATOL + CHECK_RTOL * expected.abs()
    if not math.isfinite(result.max_abs_diff) or bool((difference > allowed).any()):
        raise ExportError(
            f"{result.path} does not reproduce the model: logits differ by up to "
            f"{result.max_abs_diff:.3g} on a random clip (allowed {CHECK_ATOL} + "
            f"{CHECK_RTOL} x |logit|)"
        )


def _runner(result: ExportResult) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if result.format == "torch-export":
        program, _ = load_program(result.path)
        module = program.module()
        return lambda clip: module(clip).detach()
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    session = onnx_session(result.path)
    return lambda clip: torch.from_numpy(session.run(None, {INPUT_NAME: clip.numpy()})[0])


def onnx_session(path: str | Path):
    """An onnxruntime CPU session of an exported file."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@contextmanager
def _quiet_torch():
    """Silence what the exporters say about themselves (FutureWarnings of PyTorch's internals,
    notes that torchvision's ops are not registered, the ONNX optimiser's progress), not what
    concerns the model."""
    loggers = {name: logging.getLogger(name) for name in _EXPORTER_LOGGERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|copyreg)")
            yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])


_EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")
