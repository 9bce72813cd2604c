"""SIFA-Net and its baselines (C2D, TSM) on ResNet, as in SPEC section 2.

One network, three temporal operators:

- ``sifa_*``: stand-alone inter-frame attention inside every second block of res3-res5
  (``GC, SIFA, GC, SIFA, ...``), after the block's 1x3x3 conv;
- ``c2d_*``: the identical network with every SIFA step removed;
- ``tsm_*``: the C2D network with a temporal shift of 1/8 of the channels each way before
  ``conv1`` of every residual block.

All convs are ``1 x 1 x 1`` or ``1 x 3 x 3`` except the stem, a ``(s, 7, 7)`` conv of temporal
stride ``s`` (4 by default: 16 frames become 4 time steps). Parameter names follow torchvision's
ResNet so ImageNet checkpoints inflate into it (:func:`sifa.models.load_2d_resnet_weights`).
The ``*_resnet18`` models (basic blocks, SIFA after the first 3x3 conv) are this project's
addition for CPU experiments; the paper uses ResNet-50 and ResNet-101.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sifa.models.registry import register_model
from sifa.models.switches import (
    check_clips,
    check_flag,
    check_int,
    check_rate,
    sifa_block_options,
)
from sifa.nn import GlobalContext, InterFrameAttention, temporal_shift

STAGES = ("res2", "res3", "res4", "res5")  # torchvision's layer1 ... layer4
SIFA_STAGE_CHOICES = ("res3", "res4", "res5")
TEMPORAL_CHOICES = ("sifa", "tsm", "none")


class DualLogits(NamedTuple):
    """Training-mode output of a dual-head model: the logits of both heads."""

    main: torch.Tensor
    dual: torch.Tensor


def average_softmax_logits(*logits: torch.Tensor) -> torch.Tensor:
    """``log(mean_i softmax(logits_i))``: logits whose softmax is the heads' average softmax."""
    log_probs = torch.stack([F.log_softmax(x, dim=-1) for x in logits])
    return torch.logsumexp(log_probs, dim=0) - torch.log(torch.tensor(float(len(logits))))


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False)


def _conv1x3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(
        in_channels,
        out_channels,
        (1, 3, 3),
        stride=(1, stride, stride),
        padding=(0, 1, 1),
        bias=False,
    )


class BasicBlock(nn.Module):
    """``1x3x3 conv -> BN -> ReLU -> [SIFA] -> 1x3x3 conv -> BN -> [GC]`` plus shortcut, ReLU."""

    expansion = 1

    def __init__(self, in_channels, planes, stride=1, *, downsample=None, gc=False, sifa=None,
                 shift_div=None):  # fmt: skip
        super().__init__()
        self.shift_div = shift_div
        self.conv1 = _conv1x3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.sifa = InterFrameAttention(planes, **sifa) if sifa is not None else None
        self.conv2 = _conv1x3x3(planes, planes)
        self.bn2 = nn.BatchNorm3d(planes)
        self.gc = GlobalContext(planes) if gc else None
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = temporal_shift(x, self.shift_div) if self.shift_div else x
        out = self.relu(self.bn1(self.conv1(out)))
        if self.sifa is not None:
            out = self.sifa(out)
        out = self.bn2(self.conv2(out))
        if self.gc is not None:
            out = self.gc(out)
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """``1x1 -> BN -> ReLU -> 1x3x3 -> BN -> ReLU -> [SIFA] -> 1x1 -> BN -> [GC]`` plus shortcut,
    then ReLU. SIFA acts on the bottleneck width; the stride is on the 1x3x3 conv."""

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, *, downsample=None, gc=False, sifa=None,
                 shift_div=None):  # fmt: skip
        super().__init__()
        self.shift_div = shift_div
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv1x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.sifa = InterFrameAttention(planes, **sifa) if sifa is not None else None
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.gc = GlobalContext(planes * self.expansion) if gc else None
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = temporal_shift(x, self.shift_div) if self.shift_div else x
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.relu(self.bn2(self.conv2(out)))
        if self.sifa is not None:
            out = self.sifa(out)
        out = self.bn3(self.conv3(out))
        if self.gc is not None:
            out = self.gc(out)
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + shortcut)


def parse_sifa_stages(stages: str | Iterable[str]) -> tuple[str, ...]:
    """Stages as a sorted tuple; accepts ``("res4", "res5")`` or ``"res4,res5"``."""
    if isinstance(stages, str):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    stages = tuple(stages)
    bad = [s for s in stages if s not in SIFA_STAGE_CHOICES]
    if bad:
        raise ValueError(f"sifa_stages must be drawn from {SIFA_STAGE_CHOICES}, got {bad}")
    return tuple(s for s in SIFA_STAGE_CHOICES if s in stages)


class ResNet3d(nn.Module):
    """ResNet video backbone with a temporal operator, GC blocks and the dual res5 head.

    Input: clips ``(N, 3, T, H, W)``, ``T`` a positive multiple of ``stem_temporal_stride``; any
    ``H, W`` of at least 32 work with the same weights.

    Output contract (the dual head, SPEC section 2):

    - ``dual_head=False``: logits ``(N, num_classes)`` in training and in eval.
    - ``dual_head=True`` and ``model.training``: :class:`DualLogits` ``(main, dual)``, the
      logits of the main and of the dual res5 branch. The training loss is the sum of both
      cross-entropies: :func:`sifa.models.classification_loss` computes it for either kind of
      output.
    - ``dual_head=True`` in eval mode: one tensor ``log((softmax(main) + softmax(dual)) / 2)``,
      logits whose softmax is exactly the average of the two heads' softmaxes, as the paper
      tests. ``softmax(model(x), -1)`` is the class probability for every model.

    The dual branch max-pools the res4 output over time by 2 (``ceil_mode``, so a single time
    step survives) and runs a second res5 with spatial stride 1.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        temporal: str,
        num_classes: int = 400,
        dual_head: bool = True,
        gc_blocks: bool = True,
        stem_temporal_stride: int = 4,
        dropout: float = 0.5,
        zero_init_residual: bool = True,
        base_width: int = 64,
        sifa_stages: Iterable[str] = SIFA_STAGE_CHOICES,
        sifa_options: dict | None = None,
        shift_div: int = 8,
    ) -> None:
        super().__init__()
        if temporal not in TEMPORAL_CHOICES:
            raise ValueError(f"temporal must be one of {TEMPORAL_CHOICES}, got {temporal!r}")
        check_int("num_classes", num_classes, 1)
        check_flag("dual_head", dual_head)
        check_flag("gc_blocks", gc_blocks)
        check_flag("zero_init_residual", zero_init_residual)
        check_int("stem_temporal_stride", stem_temporal_stride, 1)
        check_int("shift_div", shift_div, 2)
        check_int("base_width", base_width, 1)
        check_rate("dropout", dropout)
        self.block = block
        self.temporal = temporal
        self.gc_blocks = gc_blocks
        self.zero_init_residual = zero_init_residual
        self.sifa_stages = parse_sifa_stages(sifa_stages) if temporal == "sifa" else ()
        self.sifa_options = dict(sifa_options or {})
        self.shift_div = shift_div if temporal == "tsm" else None
        self.stem_temporal_stride = stem_temporal_stride
        self.num_classes = num_classes
        widths = (base_width, 2 * base_width, 4 * base_width, 8 * base_width)
        self.num_features = widths[3] * block.expansion

        stride_t = stem_temporal_stride
        self.conv1 = nn.Conv3d(
            3, base_width, (stride_t, 7, 7), stride=(stride_t, 2, 2), padding=(0, 3, 3), bias=False
        )
        self.bn1 = nn.BatchNorm3d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        in_channels = base_width
        for index, (stage, planes, depth) in enumerate(zip(STAGES, widths, layers, strict=True)):
            stride = 1 if index == 0 else 2
            layer = self._make_layer(stage, in_channels, planes, depth, stride)
            self.add_module(f"layer{index + 1}", layer)
            in_channels = planes * block.expansion
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.dual_head = dual_head
        if dual_head:
            self.temporal_pool = nn.MaxPool3d((2, 1, 1), ceil_mode=True)
            res4_channels = widths[2] * block.expansion
            self.layer4_dual = self._make_layer(
                "res5", res4_channels, widths[3], layers[3], stride=1
            )
            self.fc_dual = nn.Linear(self.num_features, num_classes)
        self.reset_parameters()

    def _make_layer(self, stage, in_channels, planes, depth, stride) -> nn.Sequential:
        out_channels = planes * self.block.expansion
        blocks = []
        for index in range(depth):
            downsample = None
            if index == 0 and (stride != 1 or in_channels != out_channels):
                downsample = nn.Sequential(
                    _conv1x1(in_channels, out_channels, stride), nn.BatchNorm3d(out_channels)
                )
            # res3-res5 alternate GC, SIFA, GC, SIFA, ... starting with GC; res2 is plain.
            alternating = stage != "res2"
            gc = alternating and index % 2 == 0 and self.gc_blocks
            sifa_here = alternating and index % 2 == 1 and stage in self.sifa_stages
            blocks.append(
                self.block(
                    in_channels if index == 0 else out_channels,
                    planes,
                    stride if index == 0 else 1,
                    downsample=downsample,
                    gc=gc,
                    sifa=self.sifa_options if sifa_here else None,
                    shift_div=self.shift_div,
                )
            )
        return nn.Sequential(*blocks)

    def reset_parameters(self) -> None:
        """The released code's model-wide init: Kaiming convs, unit BN, and with
        ``zero_init_residual`` the last BN of every residual branch at zero (each block starts
        as the identity). The SIFA and GC layers then restore their own zero inits, which the
        released code's model-wide init overwrote for the offset convs by accident."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (InterFrameAttention, GlobalContext)):
                m.reset_parameters()
            elif self.zero_init_residual and isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif self.zero_init_residual and isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def check_input(self, x: torch.Tensor) -> None:
        check_clips(x, self.stem_temporal_stride, "stem_temporal_stride")
        if min(x.shape[3:]) < 32:
            raise ValueError(f"clips must be at least 32x32 pixels, got {tuple(x.shape[3:])}")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Feature maps ``(N, C, T', H', W')`` of res5 and of the dual res5 (or ``None``)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        dual = self.layer4_dual(self.temporal_pool(x)) if self.dual_head else None
        return self.layer4(x), dual

    def forward_head(self, features: tuple[torch.Tensor, torch.Tensor | None]):
        """Logits from :meth:`forward_features`' output, per the class's output contract."""
        main, dual = features
        logits = self.fc(self.dropout(main.mean(dim=(2, 3, 4))))
        if dual is None:
            return logits
        logits_dual = self.fc_dual(self.dropout(dual.mean(dim=(2, 3, 4))))
        if self.training:
            return DualLogits(logits, logits_dual)
        return average_softmax_logits(logits, logits_dual)

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised classifier(s) for ``num_classes`` classes."""
        check_int("num_classes", num_classes, 1)
        self.num_classes = num_classes
        device = self.fc.weight.device
        self.fc = nn.Linear(self.num_features, num_classes, device=device)
        if self.dual_head:
            self.fc_dual = nn.Linear(self.num_features, num_classes, device=device)


# ---------------------------------------------------------------------------------------------
# Registered builders: ``partial(family, depth)``. Each family takes exactly the switches that
# mean something for it, so a misspelt or misplaced switch is an error naming it.

_DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def _sifa_resnet(
    depth: int,
    *,
    num_classes: int = 400,
    dual_head: bool = True,
    gc_blocks: bool = True,
    sifa_stages: str | Iterable[str] = SIFA_STAGE_CHOICES,
    stem_temporal_stride: int = 4,
    dropout: float = 0.5,
    zero_init_residual: bool = True,
    base_width: int = 64,
    msm: str = "official",
    offset_init: str = "zero",
    offsets: str = "deformable",
    scale: float | str | None = "1/C",
    normalize: str = "none",
    sifa_kernel_size: int = 3,
    sifa_dilation: int = 1,
    sifa_groups: int = 1,
) -> ResNet3d:
    block, layers = _DEPTHS[depth]
    sifa_options = sifa_block_options(
        offsets=offsets, msm=msm, offset_init=offset_init, scale=scale, normalize=normalize,
        sifa_kernel_size=sifa_kernel_size, sifa_dilation=sifa_dilation, sifa_groups=sifa_groups,
    )  # fmt: skip
    return ResNet3d(
        block,
        layers,
        temporal="sifa",
        num_classes=num_classes,
        dual_head=dual_head,
        gc_blocks=gc_blocks,
        stem_temporal_stride=stem_temporal_stride,
        dropout=dropout,
        zero_init_residual=zero_init_residual,
        base_width=base_width,
        sifa_stages=sifa_stages,
        sifa_options=sifa_options,
    )


def _c2d_resnet(
    depth: int,
    *,
    num_classes: int = 400,
    dual_head: bool = True,
    gc_blocks: bool = True,
    stem_temporal_stride: int = 4,
    dropout: float = 0.5,
    zero_init_residual: bool = True,
    base_width: int = 64,
) -> ResNet3d:
    block, layers = _DEPTHS[depth]
    return ResNet3d(
        block,
        layers,
        temporal="none",
        num_classes=num_classes,
        dual_head=dual_head,
        gc_blocks=gc_blocks,
        stem_temporal_stride=stem_temporal_stride,
        dropout=dropout,
        zero_init_residual=zero_init_residual,
        base_width=base_width,
    )


def _tsm_resnet(
    depth: int,
    *,
    num_classes: int = 400,
    dual_head: bool = True,
    gc_blocks: bool = True,
    stem_temporal_stride: int = 4,
    dropout: float = 0.5,
    zero_init_residual: bool = True,
    base_width: int = 64,
    shift_div: int = 8,
) -> ResNet3d:
    block, layers = _DEPTHS[depth]
    return ResNet3d(
        block,
        layers,
        temporal="tsm",
        num_classes=num_classes,
        dual_head=dual_head,
        gc_blocks=gc_blocks,
        stem_temporal_stride=stem_temporal_stride,
        dropout=dropout,
        zero_init_residual=zero_init_residual,
        base_width=base_width,
        shift_div=shift_div,
    )


_CPU_NOTE = "our addition for CPU experiments (basic blocks); not in the paper"
_SIFA50_PAPER = {
    "gmacs": {16: 25, 32: 51, 64: 112},
    "kinetics400_top1": {16: 77.4, 32: 78.5, 64: 80.1},
    "something_v1_top1": {16: 52.7, 32: 54.0, 64: 55.2},
    "something_v2_top1": {16: 64.8, 32: 66.0, 64: 66.9},
}
_SIFA101_PAPER = {
    "gmacs": {16: 39, 32: 78, 64: 157},
    "kinetics400_top1": {16: 78.7, 32: 79.8, 64: 81.3},
    "something_v1_top1": {16: 53.7, 32: 55.4, 64: 56.1},
    "something_v2_top1": {16: 65.9, 32: 67.3, 64: 68.1},
}

sifa_resnet18 = register_model(partial(_sifa_resnet, 18), name="sifa_resnet18", note=_CPU_NOTE)
sifa_resnet50 = register_model(
    partial(_sifa_resnet, 50),
    name="sifa_resnet50",
    paper=_SIFA50_PAPER,
    note="the paper's main network",
)
sifa_resnet101 = register_model(
    partial(_sifa_resnet, 101),
    name="sifa_resnet101",
    paper=_SIFA101_PAPER,
    note="the paper's deeper SIFA-Net",
)
c2d_resnet18 = register_model(partial(_c2d_resnet, 18), name="c2d_resnet18", note=_CPU_NOTE)
c2d_resnet50 = register_model(
    partial(_c2d_resnet, 50),
    name="c2d_resnet50",
    paper={"gmacs": {16: 23}, "kinetics400_top1": {16: 72.0}},
    note="the paper's plain 2D ResNet (Kinetics-400 ablation)",
)
c2d_resnet101 = register_model(
    partial(_c2d_resnet, 101),
    name="c2d_resnet101",
    note="plain 2D ResNet-101, the per-frame baseline of sifa_resnet101; not in the paper",
)
tsm_resnet18 = register_model(partial(_tsm_resnet, 18), name="tsm_resnet18", note=_CPU_NOTE)
tsm_resnet50 = register_model(
    partial(_tsm_resnet, 50),
    name="tsm_resnet50",
    paper={"kinetics400_top1": {16: 74.7}},
    note="the paper's temporal-shift ablation in the same network",
)
tsm_resnet101 = register_model(
    partial(_tsm_resnet, 101),
    name="tsm_resnet101",
    note="temporal shift in ResNet-101, beside sifa_resnet101; not in the paper",
)
