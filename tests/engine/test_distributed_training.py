"""Training with several processes (DDP): parameters that get no gradient at the configured clip
length, and a 2-process gloo run that equals a single-process run."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from sifa.engine.checkpoint import load_weights
from sifa.engine.distributed import Distributed, ddp_parameters_without_gradient
from sifa.engine.distributed import parameters_without_gradient as probe
from sifa.engine.trainer import Trainer
from sifa.models import classification_loss, create_model
from sifa.nn import InterFrameAttention

from training_fixtures import tiny_config, write_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def sifa_resnet_expected(model, frames: int) -> list[str]:
    """The offset convs of SIFA-Net's SIFA blocks that see a single time step, from the
    architecture (SPEC section 2): the stem divides time by ``stem_temporal_stride`` and no
    later stage changes it, except the dual res5 branch, which max-pools it by 2 (ceil)."""
    steps = frames // model.stem_temporal_stride
    expected = []
    for name, module in model.named_modules():
        if isinstance(module, InterFrameAttention):
            stage_steps = math.ceil(steps / 2) if name.startswith("layer4_dual.") else steps
            if stage_steps == 1:
                expected.append(f"{name}.offset_conv.weight")
    return expected


def probe_clips(model, frames: int, size: int = 32) -> list[str]:
    return probe(model, (2, 3, frames, size, size), classification_loss)


@pytest.mark.parametrize("frames", [4, 8, 16])
def test_probe_finds_the_offset_convs_of_sifa_blocks_with_one_time_step(frames):
    torch.manual_seed(0)
    model = create_model("sifa_resnet18", num_classes=4, base_width=8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    model.eval()

    found = probe_clips(model, frames)

    expected = sifa_resnet_expected(model, frames)
    assert found == expected
    if frames == 8:  # the demo recipe's clip length: only the dual branch's SIFA block
        assert found == ["layer4_dual.1.sifa.offset_conv.weight"]
    assert (frames == 16) == (found == [])
    assert (frames == 4) == (len(found) == 4)  # every SIFA block of res3, res4, res5, dual res5
    # Shapes only: the model's weights, buffers and mode and the RNG are as they were.
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("name", ["c2d_resnet18", "tsm_resnet18"])
def test_probe_finds_nothing_in_the_baselines(name):
    model = create_model(name, num_classes=4, base_width=8)
    assert probe_clips(model, 4) == probe_clips(model, 8) == []


def test_probe_on_sifa_transformer_short_clips():
    """SIFA-Transformer keeps the time steps of its tubelet embedding through every stage: one
    step (clip length = tubelet size) leaves every SIFA block's offset conv and LayerNorm
    without a gradient; two steps or more, nothing. The temporal conv of the shifted blocks
    always gets one (its middle tap reads the frame itself)."""
    with torch.device("meta"):  # shapes are all the probe needs
        model = create_model("sifa_swin_t", num_classes=4)
    sifa_blocks = [n for n, m in model.named_modules() if getattr(m, "sifa_norm", None)]
    assert len(sifa_blocks) == 6  # the non-shifted blocks of depths 2/2/6/2
    expected = [
        f"{block}.{part}"
        for block in sifa_blocks
        for part in ("sifa.offset_conv.weight", "sifa_norm.weight", "sifa_norm.bias")
    ]
    assert probe(model, (2, 3, 4, 64, 64), classification_loss) == expected
    assert probe(model, (2, 3, 8, 64, 64), classification_loss) == []


class _ReadsValues(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        if x.mean().item() > 0:  # a data-dependent branch: impossible on the meta device
            x = -x
        return self.fc(x.mean(dim=(2, 3, 4)))


def test_a_model_the_probe_cannot_run_falls_back_to_searching_every_update(caplog):
    group = Distributed(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    with caplog.at_level(logging.WARNING, logger="sifa.engine.distributed"):
        found = ddp_parameters_without_gradient(
            group, _ReadsValues(), (2, 3, 4, 8, 8), classification_loss
        )
    assert found is None
    assert "find_unused_parameters" in caplog.text and "item()" in caplog.text


def test_two_gloo_processes_train_like_one_process(tiny_data, tmp_path):
    """``torchrun`` with 2 gloo processes of 1 clip each ends with exactly the weights of a
    single process that accumulates 2 micro-batches of 1 clip.

    Why the comparison is exact: with one clip per process, the distributed sampler gives
    process ``r`` the clip at position ``2u + r`` of the epoch's order at update ``u``, and the
    single process, drawing from the same order, takes positions ``2u`` and ``2u + 1`` as its
    two micro-batches. BatchNorm in training mode normalises each micro-batch (each process's
    batch) by its own statistics, the same clip alone in both runs; DDP averages the two
    processes' gradients, and accumulation adds the two halves of the loss, the same
    ``g_0 / 2 + g_1 / 2`` (DDP divides each process's gradient by 2 before summing; the
    accumulating process halves each micro-batch's loss, an exact scaling), so with one thread
    everywhere (the same sums in the same order) the schedule, clipping and AdamW see bitwise
    equal gradients. (With another thread count, rounding flips the sign of gradients that
    cancel to nearly zero, and Adam turns that into differences of the order of the learning
    rate: hence ``threads=1`` and an exact comparison.) Only
    BatchNorm's running statistics (buffers, which training never reads) differ: DDP keeps
    rank 0's, updated by its own clips. At 8 frames the dual branch's SIFA block has a single
    time step: its offset conv (Kaiming init here, so that weight decay would show) gets no
    gradient in either run, and AdamW must leave it untouched in both."""
    common = dict(data__batch_size=1, optim__epochs=1, eval_every=0, log_every=100, threads=1,
                  model__switches__offset_init="kaiming")  # fmt: skip
    two = tiny_config(tiny_data, tmp_path / "two", **common)
    one = tiny_config(tiny_data, tmp_path / "one", optim__accumulate=2, **common)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "sifa", "train",
               str(write_config(two, tmp_path / "two.yaml"))]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done: 6 updates") == 1, result.stdout  # rank 0 only
    frozen = "layer4_dual.1.sifa.offset_conv.weight"
    message = f"1 parameter gets no gradient with clips of 8 frames: {frozen}: frozen"
    assert result.stderr.count(message) == 1, result.stderr[-3000:]

    threads = torch.get_num_threads()
    try:
        trainer = Trainer(one)
        initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        assert trainer.fit().updates == 6  # 12 clips, 2 per update
    finally:
        torch.set_num_threads(threads)
    ddp, _ = load_weights(tmp_path / "two" / "checkpoints" / "last.safetensors")
    single, _ = load_weights(tmp_path / "one" / "checkpoints" / "last.safetensors")
    assert initial[frozen].abs().sum() > 0
    for name, _ in trainer.model.named_parameters():
        assert torch.equal(ddp[name], single[name]), name
        if name != frozen:  # every other parameter learnt something
            assert not torch.equal(ddp[name], initial[name]), name
    assert torch.equal(ddp[frozen], initial[frozen])  # no step, no weight decay
