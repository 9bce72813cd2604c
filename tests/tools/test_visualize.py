"""``sifa visualize``: the drawn points are where SIFA samples, in input pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sifa.cli import main
from sifa.models import create_model
from sifa.tools.visualize import explain_clip, pick_queries, sifa_stages

from loop_reference import slow_attention_weights


def _clip(frames=8, height=64, width=64, seed=0):
    return torch.randn(1, 3, frames, height, width, generator=torch.Generator().manual_seed(seed))


def _regular_grid(query, kernel_size, dilation, stride_y, stride_x):
    """The k x k taps around ``query`` (input pixels) for zero offsets, written out."""
    half = (kernel_size - 1) // 2
    return [
        (query[0] + i * dilation * stride_y, query[1] + j * dilation * stride_x)
        for i in range(-half, half + 1)
        for j in range(-half, half + 1)
    ]


@pytest.mark.parametrize(
    ("name", "switches", "strides"),
    [
        # ResNet: stem /4 in time; res3, res4, res5 are 8, 16 and 32 times smaller in space
        ("sifa_resnet18", dict(sifa_dilation=2), {"layer2": 8, "layer3": 16, "layer4": 32}),
        # Swin: tubelets of 4 frames; stages 4, 8, 16 and 32 times smaller
        ("sifa_swin_t", dict(sifa_kernel_size=5), {"layers.0": 4, "layers.1": 8}),
    ],
)
def test_zero_offsets_put_the_taps_on_the_regular_grid_in_input_pixels(name, switches, strides):
    model = create_model(name, num_classes=4, **switches)  # offsets start at zero
    _, views = explain_clip(model, _clip(height=64, width=128), points=3)
    by_stage = {view.stage: view for view in views}
    assert set(strides) <= set(by_stage)
    time_stride = 4  # the ResNet stem's temporal stride, the Swin tubelet
    for stage, stride in strides.items():
        view = by_stage[stage]
        assert view.stride == (time_stride, stride, stride)
        assert view.feature_size == (8 // time_stride, 64 // stride, 128 // stride)
        for pair in view.pairs:
            # drawn on the middle frame of the frames each feature step covers
            assert pair.frames == (
                pair.pair * time_stride + time_stride // 2,
                (pair.pair + 1) * time_stride + time_stride // 2,
            )
            # fewer on the smallest maps, where no 3 positions are 2 feature pixels apart
            assert len(pair.queries) == 3 if stride <= 16 else 1 <= len(pair.queries) <= 3
            for query in pair.queries:
                fy, fx = query.feature_position
                # the centre of the stride x stride input pixels the feature pixel covers
                assert query.query == ((fy + 0.5) * stride - 0.5, (fx + 0.5) * stride - 0.5)
                expected = _regular_grid(
                    query.query, view.kernel_size, view.dilation, stride, stride
                )
                np.testing.assert_allclose(query.samples, expected, rtol=0, atol=1e-9)


def test_learned_offsets_move_the_taps_and_the_weights_are_the_operators():
    torch.manual_seed(0)
    model = create_model("sifa_resnet18", num_classes=4, offset_init="kaiming").eval()
    block = model.get_submodule("layer3.1.sifa")
    seen = {}
    block.register_forward_pre_hook(lambda _m, args: seen.update(x=args[0]))
    _, views = explain_clip(model, _clip(), stages=["layer3"], points=2)
    (view,) = views
    x = seen["x"]  # (1, C, 2, 4, 4) at stride 16
    current, following = x[:, :, 0].double(), x[:, :, 1].double()
    with torch.no_grad():
        gate = torch.sigmoid(following - current)
        weight = block.offset_conv.weight.double()
        offset = F.conv2d(gate * following + following, weight, padding=1)
        weights = slow_attention_weights(current, following, offset)
    moved = 0
    for query in view.pairs[0].queries:
        fy, fx = query.feature_position
        grid = _regular_grid(query.query, 3, 1, 16, 16)
        for n, (sample, (gy, gx)) in enumerate(zip(query.samples, grid, strict=True)):
            dy, dx = offset[0, 2 * n, fy, fx].item(), offset[0, 2 * n + 1, fy, fx].item()
            np.testing.assert_allclose(sample, (gy + 16 * dy, gx + 16 * dx), atol=1e-4)
            moved += abs(dy) + abs(dx) > 1e-3
        np.testing.assert_allclose(query.weights, weights[0, 0, :, fy, fx], rtol=1e-4, atol=1e-6)
    assert moved > 0


def test_queries_are_the_most_salient_spaced_positions_or_the_given_points():
    heat = torch.zeros(6, 6)
    heat[2, 2], heat[2, 3], heat[5, 5], heat[0, 0] = 4.0, 3.0, 2.0, 1.0
    assert pick_queries(heat, 3) == [(2, 2), (5, 5), (0, 0)]  # (2, 3) is next to (2, 2)
    model = create_model("sifa_resnet18", num_classes=4)
    _, views = explain_clip(model, _clip(), stages=["layer2"], queries=[(0.0, 0.0), (40.0, 63.0)])
    positions = [q.feature_position for q in views[0].pairs[0].queries]
    assert positions == [(0, 0), (5, 7)]  # input pixels // stride 8


def test_stages_are_the_last_sifa_block_of_each_stage():
    swin = create_model("sifa_swin_t", num_classes=4)
    assert sifa_stages(swin) == {
        "layers.0": "layers.0.blocks.0.sifa",
        "layers.1": "layers.1.blocks.0.sifa",
        "layers.2": "layers.2.blocks.4.sifa",
        "layers.3": "layers.3.blocks.0.sifa",
    }
    resnet = create_model("sifa_resnet50", num_classes=4)
    assert sifa_stages(resnet)["layer3"] == "layer3.5.sifa"


def test_bad_requests_are_named():
    model = create_model("sifa_resnet18", num_classes=4)
    with pytest.raises(ValueError, match=r"no SIFA stage or block 'res9'; stages: layer2, layer3"):
        explain_clip(model, _clip(), stages=["res9"])
    with pytest.raises(ValueError, match=r"stage layer4_dual sees 1 time step for a 8-frame clip"):
        explain_clip(model, _clip(), stages=["layer4_dual"])
    with pytest.raises(ValueError, match=r"has no SIFA block: nothing to visualize"):
        explain_clip(create_model("c2d_resnet18", num_classes=4), _clip())
    with pytest.raises(ValueError, match=r"expected one clip \(1, 3, T, H, W\)"):
        explain_clip(model, torch.zeros(2, 3, 8, 64, 64))


def _scatter(axis, gid):
    (collection,) = [c for c in axis.collections if c.get_gid() == gid]
    return collection


def test_command_writes_figures_gifs_and_the_points_it_draws(
    trained_run, tiny_data, tmp_path, drawn_figures, capsys
):
    video = sorted((tiny_data / "videos").rglob("*.mp4"))[0]
    out = tmp_path / "pictures"
    argv = ["visualize", str(video), "--checkpoint", str(trained_run), "--out", str(out), "--gif"]
    assert main([*argv, "--points", "2"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "points.json").read_text())
    stages = [stage["stage"] for stage in summary["stages"]]
    assert stages == ["layer2", "layer3", "layer4"]  # the dual res5 sees one time step
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["points.json", *(f"{s}.png" for s in stages), *(f"{s}.gif" for s in stages)]
    )
    assert summary["prediction"][0]["label"] in printed
    for stage, figure in zip(summary["stages"], drawn_figures, strict=True):
        with Image.open(out / f"{stage['stage']}.png") as image:
            assert image.format == "PNG" and min(image.size) > 200
        with Image.open(out / f"{stage['stage']}.gif") as gif:
            assert gif.n_frames == len(stage["pairs"])
        queries_axis, samples_axis, _ = figure.axes
        for index, query in enumerate(stage["pairs"][0]["queries"]):
            # matplotlib stores (x, y): the points drawn are the points written
            drawn = _scatter(queries_axis, f"query{index}").get_offsets()
            np.testing.assert_allclose(drawn, [query["query"][::-1]])
            drawn = _scatter(samples_axis, f"samples{index}").get_offsets()
            np.testing.assert_allclose(drawn, [s[::-1] for s in query["samples"]])


def test_command_names_a_missing_video_and_a_bad_pair(trained_run, tmp_path, tiny_data, capsys):
    out = str(tmp_path / "out")
    assert main(["visualize", str(tmp_path / "none.mp4"), "--checkpoint", str(trained_run),
                 "--out", out]) == 2  # fmt: skip
    assert "none.mp4" in capsys.readouterr().err
    video = str(sorted((tiny_data / "videos").rglob("*.mp4"))[0])
    assert main(["visualize", video, "--checkpoint", str(trained_run), "--out", out,
                 "--pair", "3"]) == 2  # fmt: skip
    assert (
        "pair 3 does not exist at stage layer2: it has 1 frame pair(s)" in capsys.readouterr().err
    )
    assert main(["visualize", video, "--checkpoint", str(trained_run), "--out", out,
                 "--start", "5"]) == 2  # fmt: skip
    assert "needs frames up to 12, the video has 8" in capsys.readouterr().err
