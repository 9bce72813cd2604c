"""SIFA-Transformer through the engine: ImageNet inflation from the config, training, the saved
model, and evaluation on another clip length."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from sifa.engine.checkpoint import load_model
from sifa.engine.evaluate import evaluate_checkpoint
from sifa.engine.trainer import train
from sifa.models import create_model

from training_fixtures import tiny_config


def _swin_t_2d_checkpoint(path):
    """A 2D Swin-T in the reference key layout: ``swin_t``'s own weights with the tubelet's
    centre tap as the 2D patch kernel, and a 1000-class head."""
    torch.manual_seed(5)
    state = create_model("swin_t", num_classes=1000).state_dict()
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"][:, :, 2].contiguous()
    save_file(state, str(path))
    return state


def test_sifa_swin_t_inflates_trains_and_evaluates(tiny_data, tmp_path):
    state = _swin_t_2d_checkpoint(tmp_path / "swin_t_2d.safetensors")
    config = tiny_config(
        tiny_data, tmp_path / "run", model__name="sifa_swin_t",
        model__switches={"drop_path_rate": 0.1, "dropout": 0.0},
        model__pretrained=str(tmp_path / "swin_t_2d.safetensors"),
        data__clip_len=8, data__test_clips=1, optim__epochs=1, eval_every=1,
    )  # fmt: skip
    result = train(config)
    assert result.updates == 3 and "val_top1" in result.history[-1]
    model, _, class_names = load_model(tmp_path / "run")
    assert len(class_names) == 4 and model.head.out_features == 4
    trained = model.state_dict()
    # The inflated 2D weights were the starting point: three small steps stay close to them.
    for key in ("layers.2.blocks.3.attn.qkv.weight", "norm.weight"):
        start = state[key]
        assert (trained[key] - start).abs().max() < 0.1 * start.abs().max() + 0.02
        assert not torch.equal(trained[key], start)  # and they were trained
    assert trained["patch_embed.proj.weight"][:, :, [0, 1, 3]].abs().max() < 0.05
    # The added parts left their zero init (two time steps: one frame pair).
    assert trained["layers.0.blocks.0.sifa_norm.weight"].abs().max() > 0
    assert trained["layers.0.blocks.1.temporal_conv.weight"].abs().max() > 0
    # Evaluation with 4-frame clips: same weights, one time step.
    report = evaluate_checkpoint(
        tmp_path / "run",
        tiny_config(tiny_data, tmp_path / "eval", model__name="sifa_swin_t", data__clip_len=4),
        tmp_path / "eval",
    )
    assert 0.0 <= report["top1"] <= 1.0 and report["num_videos"] == 8
