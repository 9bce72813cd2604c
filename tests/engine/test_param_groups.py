"""Optimiser parameter groups: weight-decay exemptions and learning-rate scales by name pattern,
their errors, their schedule, their resume, and the Swin recipe that uses them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import sifa
from sifa.engine.builders import build_optimizer, build_scheduler
from sifa.engine.checkpoint import load_training_state, load_weights
from sifa.engine.config import ConfigError, TrainConfig, load_config
from sifa.engine.trainer import Trainer, train

from training_fixtures import tiny_config

REPO = Path(__file__).resolve().parents[2]
SWIN_RECIPE = REPO / "configs" / "sifa_swin_b_k400_64f.yaml"


def config(model_name: str = "tiny", **optim):
    return OmegaConf.merge(
        OmegaConf.structured(TrainConfig), {"model": {"name": model_name}, "optim": optim}
    )


class Tiny(nn.Module):
    """Named like a small transformer: an embedding, a norm, a 2-D table, a head, a frozen part."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.table = nn.Parameter(torch.zeros(3, 2))
        self.head = nn.Linear(8, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def settings(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, tuple]:
    """``{parameter name: (lr, weight decay)}`` as the optimiser holds them; every parameter in
    at most one group, no group empty."""
    names = {id(p): name for name, p in model.named_parameters()}
    found: dict[str, tuple] = {}
    for group in optimizer.param_groups:
        assert group["params"], "an empty parameter group"
        for param in group["params"]:
            name = names[id(param)]
            assert name not in found, f"{name} is in two groups"
            found[name] = (group["lr"], group["weight_decay"])
    return found


def test_patterns_set_weight_decay_and_lr_per_parameter():
    model = Tiny()
    cfg = config(name="adamw", lr=0.1, weight_decay=0.01, no_weight_decay=["table"],
                 lr_scales={"head.*": 2.0, "embed.*": 0.5})  # fmt: skip
    optimizer = build_optimizer(cfg, model)
    assert settings(optimizer, model) == {
        "embed.weight": (0.05, 0.01),
        "embed.bias": (0.05, 0.01),  # decay_norm_and_bias defaults to true
        "norm.weight": (0.1, 0.01),
        "norm.bias": (0.1, 0.01),
        "table": (0.1, 0.0),
        "head.weight": (0.2, 0.01),
        "head.bias": (0.2, 0.01),
    }  # the frozen layer is left out
    assert len(optimizer.param_groups) == 4  # (x0.5, decay), (x1, decay), (x1, none), (x2, decay)
    # The first group is at the base lr with weight decay: the lr the trainer logs.
    assert (optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["weight_decay"]) == (
        0.1,
        0.01,
    )


def test_decay_norm_and_bias_false_exempts_every_1d_parameter():
    model = Tiny()
    cfg = config(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.01, decay_norm_and_bias=False)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.SGD)
    assert settings(optimizer, model) == {
        "embed.weight": (0.1, 0.01),
        "embed.bias": (0.1, 0.0),
        "norm.weight": (0.1, 0.0),
        "norm.bias": (0.1, 0.0),
        "table": (0.1, 0.01),  # 2-D: only a pattern exempts it
        "head.weight": (0.1, 0.01),
        "head.bias": (0.1, 0.0),
    }
    assert len(optimizer.param_groups) == 2
    assert all(group["momentum"] == 0.9 for group in optimizer.param_groups)


def test_equal_settings_share_one_group():
    # Without weight decay the exempt parameters need no group of their own.
    model = Tiny()
    cfg = config(lr=0.1, weight_decay=0.0, decay_norm_and_bias=False, no_weight_decay=["table"])
    optimizer = build_optimizer(cfg, model)
    assert len(optimizer.param_groups) == 1
    assert len(optimizer.param_groups[0]["params"]) == 7


def test_swin_groups_follow_the_transformer_practice():
    model = sifa.create_model("sifa_swin_t", num_classes=3)
    cfg = config("sifa_swin_t", name="adamw", lr=1e-3, weight_decay=0.05,
                 decay_norm_and_bias=False, no_weight_decay=["*relative_position_bias_table"],
                 lr_scales={"head.*": 1.0, "*": 0.1})  # fmt: skip
    optimizer = build_optimizer(cfg, model)
    # Expected from the module types: LayerNorm parameters, biases and the bias tables are not
    # decayed; everything but the head trains at 0.1x.
    exempt = {f"{name}.{p}" for name, m in model.named_modules()
              if isinstance(m, nn.LayerNorm) for p in ("weight", "bias")}  # fmt: skip
    expected = {}
    for name, _ in model.named_parameters():
        decayed = not (
            name in exempt
            or name.endswith(".bias")
            or name.endswith(".relative_position_bias_table")
        )
        expected[name] = (1e-3 if name.startswith("head.") else 1e-4, 0.05 if decayed else 0.0)
    got = settings(optimizer, model)
    assert got.keys() == expected.keys()
    for name, (lr, decay) in expected.items():
        assert got[name] == (pytest.approx(lr, rel=1e-12), decay), name
    assert len(optimizer.param_groups) == len(set(expected.values())) == 4
    assert got["layers.2.blocks.0.attn.relative_position_bias_table"][1] == 0.0
    assert got["layers.2.blocks.0.sifa_norm.weight"] == (pytest.approx(1e-4), 0.0)
    assert got["layers.2.blocks.1.temporal_conv.weight"] == (pytest.approx(1e-4), 0.05)


@pytest.mark.parametrize(
    ("optim", "named"),
    [
        ({"no_weight_decay": ["*relative_positon_bias_table"]}, "optim.no_weight_decay"),
        ({"no_weight_decay": ["norm.weight", "Head.*"]}, "optim.no_weight_decay"),
        ({"lr_scales": {"backbone.*": 0.1}}, "optim.lr_scales"),
        ({"lr_scales": {"head.*": 1.0, "hed.*": 0.1}}, "optim.lr_scales"),
    ],
)
def test_a_pattern_that_matches_nothing_is_named(optim, named):
    with pytest.raises(ConfigError) as error:
        build_optimizer(config(**optim), Tiny())
    pattern = [*optim.get("no_weight_decay", []), *optim.get("lr_scales", {})][-1]
    assert named in str(error.value) and repr(pattern) in str(error.value)


def test_a_pattern_that_matches_only_frozen_parameters_is_accepted():
    optimizer = build_optimizer(config(no_weight_decay=["frozen.*"]), Tiny())
    assert sum(len(group["params"]) for group in optimizer.param_groups) == 7


def test_a_pattern_shadowed_by_earlier_ones_is_named():
    with pytest.raises(ConfigError, match=r"optim\.lr_scales.*'head\.\*'.*'\*'"):
        build_optimizer(config(lr_scales={"*": 0.1, "head.*": 1.0}), Tiny())


@pytest.mark.parametrize(
    ("text", "overrides"),
    [
        ("optim:\n  lr_scales: {'head.*': -0.5}\n", []),
        ("optim:\n  lr_scales: {'head.*': fast}\n", []),
        ("", ["optim.lr_scales={head.*: .nan}"]),
        ("", ["optim.lr_scales={head.*: .inf}"]),
        ("", ["optim.lr_scales.head.*=0.5"]),  # split at the dots into {"head": {"*": 0.5}}
    ],
)
def test_bad_lr_scales_are_named(tmp_path, text, overrides):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"optim\.lr_scales"):
        load_config(path, overrides)


def test_a_zero_scale_is_accepted():
    optimizer = build_optimizer(config(lr=0.1, lr_scales={"embed.*": 0.0}), Tiny())
    assert sorted(group["lr"] for group in optimizer.param_groups) == [0.0, 0.1]


def scheduled_lr(step, lr, total=20, warmup=5, start=0.1, min_lr=0.0):
    """Warm-up from lr*start to lr over `warmup` updates, then a cosine down to min_lr."""
    if step < warmup:
        return lr * start + (lr - lr * start) * step / warmup
    done = min(1.0, (step - warmup) / (total - warmup))
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * done)) / 2


def test_each_group_follows_the_schedule_at_its_scale():
    model = Tiny()
    cfg = config(name="sgd", lr=0.4, momentum=0.0, weight_decay=0.0, epochs=4, warmup_epochs=1.0,
                 warmup_start_factor=0.1, min_lr=0.04, lr_scales={"embed.*": 0.25})  # fmt: skip
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, updates_per_epoch=5)
    for step in range(22):
        head_lr = scheduled_lr(step, 0.4, min_lr=0.04)
        embed_lr = scheduled_lr(step, 0.1, min_lr=0.01)  # a quarter of lr and of min_lr
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        scheduler.step()
        # Plain SGD with a unit gradient moves each parameter by its group's lr.
        moved = {name: (before[name] - p.detach()).mean().item()
                 for name, p in model.named_parameters()}  # fmt: skip
        assert moved["head.weight"] == pytest.approx(head_lr, rel=1e-5), step
        assert moved["norm.bias"] == pytest.approx(head_lr, rel=1e-5), step
        assert moved["embed.weight"] == pytest.approx(embed_lr, rel=1e-5), step
        assert moved["frozen.weight"] == 0.0


def test_the_recipe_builds_the_intended_groups():
    recipe = load_config(SWIN_RECIPE)
    switches = OmegaConf.to_container(recipe.model.switches)
    model = sifa.create_model(recipe.model.name, num_classes=400, **switches)
    got = settings(build_optimizer(recipe, model), model)
    assert got["head.weight"] == (pytest.approx(1e-3), 0.05)
    assert got["head.bias"] == (pytest.approx(1e-3), 0.0)
    assert got["patch_embed.proj.weight"] == (pytest.approx(1e-4), 0.05)
    assert got["patch_embed.proj.bias"] == (pytest.approx(1e-4), 0.0)
    assert got["layers.3.blocks.1.attn.qkv.weight"] == (pytest.approx(1e-4), 0.05)
    assert got["layers.3.blocks.1.attn.relative_position_bias_table"] == (pytest.approx(1e-4), 0.0)
    assert got["layers.0.downsample.norm.weight"] == (pytest.approx(1e-4), 0.0)
    assert got["layers.1.blocks.0.sifa_norm.bias"] == (pytest.approx(1e-4), 0.0)
    assert got["norm.weight"] == (pytest.approx(1e-4), 0.0)
    assert len(got) == sum(1 for _ in model.parameters())


def test_the_swin_recipe_states_its_settings():
    recipe = load_config(SWIN_RECIPE)
    assert (recipe.model.name, recipe.model.pretrained) == ("sifa_swin_b", None)
    assert recipe.model.switches.drop_path_rate == 0.5
    assert (recipe.data.clip_len, recipe.data.frame_interval) == (64, 2)
    views = (recipe.data.test_clips, recipe.data.test_crops)
    assert views == (4, 3) and recipe.data.test_short_side == recipe.data.test_crop_size == 224
    optim = recipe.optim
    assert (optim.name, optim.lr, tuple(optim.betas), optim.weight_decay) == (
        "adamw", 1e-3, (0.9, 0.999), 0.05,
    )  # fmt: skip
    assert (optim.epochs, optim.warmup_epochs) == (30, 2.5)
    # 64 clips per update, the figure the lr belongs to; the header says so.
    assert recipe.data.batch_size * optim.accumulate * 8 == 64
    header = SWIN_RECIPE.read_text()
    assert "--nproc_per_node 8" in header and "64 clips per update" in header
    assert "83.1%" in header and "Video Swin" in header
    assert recipe.precision in ("bf16", "fp16")


def test_resume_keeps_the_groups_and_their_lrs(tiny_data, tmp_path):
    groups = dict(optim__decay_norm_and_bias=False,
                  optim__no_weight_decay=["layer*.sifa.offset_conv.weight"],
                  optim__lr_scales={"fc.*": 1.0, "fc_dual.*": 1.0, "*": 0.5},
                  optim__epochs=3, eval_every=0)  # fmt: skip
    whole = train(tiny_config(tiny_data, tmp_path / "whole", **groups))
    config = tiny_config(tiny_data, tmp_path / "parts", **groups)
    train(config, stop_after_updates=4)

    # After 4 of 9 updates (warm-up 2 from 0.01x, cosine to 0), at lr 0.002 and 0.001.
    factor = (1 + math.cos(math.pi * (4 - 2) / (9 - 2))) / 2
    saved = load_training_state(tmp_path / "parts" / "checkpoints" / "last")["optimizer"]
    saved_lrs = sorted({group["lr"] for group in saved["param_groups"]})
    assert saved_lrs == pytest.approx([0.001 * factor, 0.002 * factor], rel=1e-12)
    assert len(saved["param_groups"]) == 4  # (x1, x0.5) x (decay, none)

    trainer = Trainer(config, resume=True)
    restored = [
        (g["lr"], g["weight_decay"], len(g["params"])) for g in trainer.optimizer.param_groups
    ]
    assert restored == [
        (g["lr"], g["weight_decay"], len(g["params"])) for g in saved["param_groups"]
    ]
    assert trainer.scheduler.base_lrs == [g["initial_lr"] for g in saved["param_groups"]]
    rest = trainer.fit()
    assert rest.updates == whole.updates == 9
    expected = load_weights(tmp_path / "whole" / "checkpoints" / "last")[0]
    got = load_weights(tmp_path / "parts" / "checkpoints" / "last")[0]
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_resume_with_other_groups_is_refused(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=1, eval_every=0)
    train(config, stop_after_updates=1)
    config.optim.lr_scales = {"fc.*": 0.1}  # two groups where the checkpoint has one
    with pytest.raises(ValueError, match="parameter groups"):
        Trainer(config, resume=True)


@pytest.mark.parametrize("model_name", ["sifa_resnet18", "sifa_swin_t"])
def test_offset_lr_scale_slows_sifas_offset_convs_only(model_name):
    """On top of lr_scales; every other parameter keeps its rate (the reference: names that
    contain '.offset_conv.', listed by hand)."""
    model = sifa.create_model(model_name, num_classes=4)
    conf = config(model_name, lr=0.01, offset_lr_scale=0.1, lr_scales={"*fc*": 2.0, "*": 1.0})
    found = settings(build_optimizer(conf, model), model)
    offsets = [name for name, _ in model.named_parameters() if ".offset_conv." in name]
    assert len(offsets) >= 3
    for name, (lr, _) in found.items():
        expected = 0.01 * (2.0 if "fc" in name else 1.0) * (0.1 if name in offsets else 1.0)
        assert lr == pytest.approx(expected), name


def test_offset_lr_scale_leaves_models_without_offsets_alone():
    model = sifa.create_model("c2d_resnet18", num_classes=4, base_width=8)
    found = settings(build_optimizer(config("c2d_resnet18", lr=0.01, offset_lr_scale=0.1), model),
                     model)  # fmt: skip
    assert {lr for lr, _ in found.values()} == {0.01}


def test_a_negative_offset_lr_scale_is_named():
    with pytest.raises(ConfigError, match=r"optim.offset_lr_scale must be >= 0, got -1"):
        load_config(None, ["optim.offset_lr_scale=-1"])
