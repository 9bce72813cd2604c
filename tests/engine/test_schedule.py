"""Warm-up + cosine learning rate, stepped per update, and the optimisers built from configs."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from sifa.engine.builders import build_optimizer, build_scheduler
from sifa.engine.config import ConfigError, TrainConfig
from sifa.engine.schedule import WarmupCosine


def expected_lr(step, lr=0.4, total=20, warmup=5, start=0.1, min_lr=0.04):
    """The schedule written out: a line from lr*start to lr, then a cosine down to min_lr."""
    if step < warmup:
        return lr * start + (lr - lr * start) * step / warmup
    done = min(1.0, (step - warmup) / (total - warmup))
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * done)) / 2


def config(**optim):
    base = OmegaConf.structured(TrainConfig)
    return OmegaConf.merge(base, {"optim": optim})


def test_scheduler_follows_warmup_then_cosine_per_update():
    cfg = config(lr=0.4, epochs=4, warmup_epochs=1.0, warmup_start_factor=0.1, min_lr=0.04)
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=cfg.optim.lr)
    scheduler = build_scheduler(cfg, optimizer, updates_per_epoch=5)
    seen = []
    for _ in range(24):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    wanted = [expected_lr(step) for step in range(24)]
    assert seen == pytest.approx(wanted, rel=1e-12)
    assert seen[20:] == pytest.approx([0.04] * 4)  # stays at the floor after the end


def test_scheduler_state_round_trips():
    cfg = config(lr=0.1, epochs=3)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(cfg, optimizer, updates_per_epoch=4)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    other_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    other = build_scheduler(cfg, other_optimizer, updates_per_epoch=4)
    other.load_state_dict(state)
    other_optimizer.load_state_dict(optimizer.state_dict())
    optimizer.step(), scheduler.step(), other_optimizer.step(), other.step()
    assert other.get_last_lr() == scheduler.get_last_lr()


def test_warmup_cosine_checks_its_arguments():
    with pytest.raises(ValueError, match="warmup"):
        WarmupCosine(total=3, warmup=4)


def test_sgd_applies_nesterov():
    model = torch.nn.Linear(3, 1, bias=False)
    optimizer = build_optimizer(config(name="sgd", nesterov=True, momentum=0.5,
                                       weight_decay=0.0, lr=0.1), model)  # fmt: skip
    assert optimizer.param_groups[0]["nesterov"] is True
    # Two steps with a constant gradient g: plain momentum moves 0.1*g then 0.1*1.5*g;
    # Nesterov moves 0.1*1.5*g then 0.1*(0.5*1.5 + 1)*g.
    with torch.no_grad():
        model.weight.zero_()
    g = torch.tensor([[1.0, -2.0, 0.5]])
    moves = []
    for _ in range(2):
        model.weight.grad = g.clone()
        before = model.weight.detach().clone()
        optimizer.step()
        moves.append((before - model.weight.detach()) / g)
    torch.testing.assert_close(moves[0], torch.full_like(g, 0.15))
    torch.testing.assert_close(moves[1], torch.full_like(g, 0.175))


def test_nesterov_without_momentum_is_refused():
    with pytest.raises(ConfigError, match="nesterov"):
        build_optimizer(config(name="sgd", nesterov=True, momentum=0.0), torch.nn.Linear(1, 1))


def test_adamw_uses_the_configured_betas_and_decay():
    optimizer = build_optimizer(
        config(name="adamw", lr=0.01, betas=[0.8, 0.99], weight_decay=0.3), torch.nn.Linear(1, 1)
    )
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.99) and group["weight_decay"] == 0.3
