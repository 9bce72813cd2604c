"""ONNX and torch.export: the files run elsewhere and reproduce the model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from sifa.cli import main
from sifa.deploy import ExportError, export_checkpoint, export_model, load_program, onnx_session
from sifa.deploy.export import check_export, decompose_program, trace, write_onnx
from sifa.engine.checkpoint import load_model, load_weights, resolve_checkpoint
from sifa.models import create_model
from sifa.models.weights import CheckpointError
from sifa.nn import InterFrameAttention
from sifa.ops import inter_frame_attention

from loop_reference import slow_inter_frame_attention
from model_fixtures import perturbed, small_sifa_transformer

ATOL = 1e-4  # the bar for ONNX against PyTorch, float32 logits


def onnx_logits(path, clip: torch.Tensor) -> np.ndarray:
    return onnx_session(path).run(None, {"clip": clip.numpy()})[0]


def assert_standard_onnx(path):
    graph = onnx.load(str(path)).graph
    domains = {node.domain for node in graph.node}
    assert domains <= {"", "ai.onnx"}, domains  # no custom operator
    assert "GridSample" in {node.op_type for node in graph.node}
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def sifa_offsets_matter(model: nn.Module, clip: torch.Tensor) -> float:
    """How much the logits move when every SIFA block's offsets are zeroed (a test of the
    export is only as sharp as this)."""
    blocks = [m for m in model.modules() if isinstance(m, InterFrameAttention)]
    with torch.no_grad():
        before = model(clip)
        saved = [b.offset_conv.weight.clone() for b in blocks]
        for block in blocks:
            block.offset_conv.weight.zero_()
        after = model(clip)
        for block, weight in zip(blocks, saved, strict=True):
            block.offset_conv.weight.copy_(weight)
    return float((before - after).abs().max())


# ---------------------------------------------------------------------------------------------
# The decomposition in ONNX, on the operator's hard cases


class _Block(nn.Module):
    """The operator on the two halves of the time axis, offsets given as a buffer."""

    def __init__(self, offset: torch.Tensor, **switches) -> None:
        super().__init__()
        self.register_buffer("offset", offset)
        self.switches = switches

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        batch = clip.shape[0]
        offset = self.offset.expand(batch, *self.offset.shape[1:])
        return inter_frame_attention(clip[:, :, 0], clip[:, :, 1], offset, **self.switches)


@pytest.mark.parametrize(
    "switches",
    [dict(), dict(dilation=2, groups=2, normalize="softmax", scale=0.4)],
    ids=["default", "dilation2-groups2-softmax"],
)
def test_onnx_grid_sample_matches_the_loop_reference_at_borders_and_outside(tmp_path, switches):
    # offsets of up to +-4 pixels on a 5 x 7 map: taps fall across borders and fully outside
    generator = torch.Generator().manual_seed(0)
    offset = 4 * torch.rand(1, 18, 5, 7, generator=generator) * 2 - 4
    block = _Block(offset, **switches).eval()
    clip = torch.randn(2, 4, 2, 5, 7, generator=generator)
    path = tmp_path / "op.onnx"
    write_onnx(decompose_program(trace(block, clip)), clip, path, optimize=True, metadata={})
    assert_standard_onnx(path)
    other = torch.randn(3, 4, 2, 5, 7, generator=generator, dtype=torch.float64)
    expected = slow_inter_frame_attention(
        other[:, :, 0], other[:, :, 1], offset.double().expand(3, -1, -1, -1), **switches
    )
    actual = onnx_logits(path, other.float())
    np.testing.assert_allclose(actual, expected.numpy(), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Whole models


def test_sifa_resnet18_onnx_runs_in_onnxruntime_and_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    # scale 1.0 instead of 1/C: the SIFA steps then move the logits enough to test them
    model = perturbed(create_model("sifa_resnet18", num_classes=7, scale=1.0))
    for block in model.modules():
        if isinstance(block, InterFrameAttention):
            nn.init.normal_(block.offset_conv.weight, std=0.05)
    clip = torch.randn(2, 3, 8, 64, 64)
    assert sifa_offsets_matter(model, clip) > 1e-3
    labels = json.dumps([f"class {i}" for i in range(7)])
    result = export_model(
        model, tmp_path / "r18.onnx", format="onnx", frames=8, size=64,
        metadata={"model": "sifa_resnet18", "class_names": labels},
    )  # fmt: skip
    assert result.max_abs_diff is not None and result.max_abs_diff < ATOL
    assert_standard_onnx(result.path)
    metadata = onnx_session(result.path).get_modelmeta().custom_metadata_map
    assert metadata == {"model": "sifa_resnet18", "class_names": labels}
    for batch in (1, 4):  # the batch dimension is free
        other = torch.randn(batch, 3, 8, 64, 64)
        with torch.no_grad():
            expected = model(other).numpy()
        np.testing.assert_allclose(onnx_logits(result.path, other), expected, atol=ATOL, rtol=0)


def test_sifa_transformer_onnx_runs_in_onnxruntime_and_matches_pytorch(tmp_path):
    """Swin-T's first two stages (``small_sifa_transformer``) at 32 pixels: the export paths
    that Swin-T's four stages take at 64 (a window shift on a padded map, and a map smaller
    than the window, which uses the bias table's central part and no shift)."""
    torch.manual_seed(0)
    model = perturbed(small_sifa_transformer(num_classes=5))
    clip = torch.randn(2, 3, 8, 32, 32)
    assert sifa_offsets_matter(model, clip) > 1e-3
    # without the exporter's optimisation pass (the ResNet's export runs it)
    result = export_model(
        model, tmp_path / "swin.onnx", format="onnx", frames=8, size=32, optimize=False
    )
    assert_standard_onnx(result.path)
    other = torch.randn(3, 3, 8, 32, 32)
    with torch.no_grad():
        expected = model(other).numpy()
    np.testing.assert_allclose(onnx_logits(result.path, other), expected, atol=ATOL, rtol=0)


def _sifa_calls(program) -> list[str]:
    return [str(n.target) for n in program.graph.nodes if str(n.target).startswith("sifa.")]


def test_torch_export_round_trip_keeps_the_fused_op(tmp_path):
    model = perturbed(create_model("sifa_resnet18", num_classes=3, base_width=16))
    metadata = {"model": "sifa_resnet18", "class_names": json.dumps(["a", "b", "c"])}
    result = export_model(
        model, tmp_path / "r18.pt2", format="torch-export", frames=8, size=32, metadata=metadata
    )
    assert result.max_abs_diff == 0.0  # the same kernels run
    program, loaded_metadata = load_program(result.path)
    assert loaded_metadata == metadata
    # res3, res4 and res5; the dual res5 sees a single time step of an 8-frame clip
    assert len(_sifa_calls(program)) == 3
    clip = torch.randn(5, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(clip), model(clip), rtol=0, atol=0)


def test_decomposed_program_loads_and_runs_without_sifa(tmp_path):
    model = perturbed(create_model("sifa_resnet18", num_classes=3, base_width=16))
    result = export_model(
        model, tmp_path / "plain.pt2", format="torch-export", frames=8, size=32, decompose=True
    )
    assert result.max_abs_diff < ATOL
    clip = torch.randn(2, 3, 8, 32, 32)
    torch.save(clip, tmp_path / "clip.pt")
    script = (
        "import sys, torch\n"
        "program = torch.export.load(sys.argv[1])\n"
        "out = program.module()(torch.load(sys.argv[2]))\n"
        "assert 'sifa' not in sys.modules\n"
        "torch.save(out, sys.argv[3])\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(result.path), str(tmp_path / "clip.pt"),
         str(tmp_path / "out.pt")],
        check=True,
    )  # fmt: skip
    with torch.no_grad():
        expected = model(clip)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=0, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# Checkpoints and the command


def test_export_command_writes_a_checked_program_with_labels(trained_run, capsys):
    assert main(["export", "--checkpoint", str(trained_run), "--format", "torch-export"]) == 0
    printed = capsys.readouterr().out
    path = trained_run / "export" / "sifa_resnet18_8x32.pt2"  # clip_len 8, test crop 32
    assert f"wrote {path}" in printed
    assert "checked with torch.export.load on a batch of 3: largest logit difference" in printed
    program, metadata = load_program(path)
    _, checkpoint_metadata = load_weights(resolve_checkpoint(trained_run))
    assert json.loads(metadata["class_names"]) == json.loads(checkpoint_metadata["class_names"])
    assert metadata["model"] == "sifa_resnet18"
    preprocessing = json.loads(metadata["preprocessing"])
    assert preprocessing["crop_size"] == 32 and len(preprocessing["mean"]) == 3
    assert json.loads(metadata["input"])["shape"] == ["batch", 3, 8, 32, 32]
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]
    model, _, _ = load_model(trained_run)
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(clip), model(clip), rtol=0, atol=1e-6)


def test_export_checkpoint_names_every_problem(trained_run, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        export_checkpoint(tmp_path / "nothing", format="onnx")
    with pytest.raises(ExportError, match=r"format must be one of \('onnx', 'torch-export'\)"):
        export_checkpoint(trained_run, format="tflite")
    with pytest.raises(
        ExportError, match=r"clips of shape \(2, 3, 6, 32, 32\).*multiple of stem_temporal_stride=4"
    ):
        export_checkpoint(trained_run, format="onnx", frames=6, out=tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="an ONNX export is always decomposed"):
        export_checkpoint(trained_run, format="onnx", decompose=False)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ExportError, match=r"program not found: .*none\.pt2"):
        load_program(tmp_path / "none.pt2")
    (tmp_path / "bad.pt2").write_bytes(b"not a zip archive")
    with pytest.raises(ExportError, match=r"bad\.pt2 is not a readable torch.export program"):
        load_program(tmp_path / "bad.pt2")


def test_missing_onnx_packages_are_named(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name)
    )
    model = create_model("sifa_resnet18", num_classes=3, base_width=8)
    with pytest.raises(ExportError, match=r"needs the onnxscript package.*sifa\[export\]"):
        export_model(model, tmp_path / "m.onnx", format="onnx", frames=8, size=32)
    assert not list(tmp_path.iterdir())


def test_a_file_that_does_not_reproduce_the_model_is_an_error(tmp_path):
    model = create_model("sifa_resnet18", num_classes=3, base_width=8).eval()
    result = export_model(model, tmp_path / "m.pt2", format="torch-export", frames=8, size=32)
    other = perturbed(create_model("sifa_resnet18", num_classes=3, base_width=8), seed=1)
    with pytest.raises(ExportError, match=r"m.pt2 does not reproduce the model: logits differ"):
        check_export(other, result, frames=8, size=32)


def test_export_command_reports_errors_without_a_traceback(trained_run, capsys):
    code = main(["export", "--checkpoint", str(trained_run), "--format", "onnx", "--frames", "6"])
    assert code == 2
    assert "sifa export: error: the model cannot take clips" in capsys.readouterr().err
