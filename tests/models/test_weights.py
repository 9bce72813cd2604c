"""Inflating ImageNet 2D ResNet checkpoints (torchvision key layout) into the video models."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import sifa
from sifa.models import CheckpointError, load_2d_resnet_weights, read_state_dict


def torchvision_resnet_shapes(depth: int, num_classes: int = 1000) -> dict[str, tuple]:
    """Key -> shape of torchvision's 2D ResNet, written out from its definition."""
    bottleneck = depth >= 50
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    expansion = 4 if bottleneck else 1
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, channels):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    in_channels = 64
    for layer, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True), 1):
        for index in range(count):
            prefix = f"layer{layer}.{index}"
            if bottleneck:
                convs = [(planes, in_channels, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            else:
                convs = [(planes, in_channels, 3), (planes, planes, 3)]
            for number, (out_c, in_c, k) in enumerate(convs, 1):
                shapes[f"{prefix}.conv{number}.weight"] = (out_c, in_c, k, k)
                bn(f"{prefix}.bn{number}", out_c)
            if index == 0 and (layer > 1 or in_channels != planes * expansion):
                shapes[f"{prefix}.downsample.0.weight"] = (planes * expansion, in_channels, 1, 1)
                bn(f"{prefix}.downsample.1", planes * expansion)
            in_channels = planes * expansion
    shapes["fc.weight"] = (num_classes, 512 * expansion)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def random_checkpoint(depth: int, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(depth)
    return {
        key: torch.tensor(7) if not shape else torch.randn(shape, generator=gen)
        for key, shape in torchvision_resnet_shapes(depth, num_classes).items()
    }


def save(state, path):
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    return path


def check_inflated(model, state, classes_match: bool):
    weights = model.state_dict()
    for key, value in state.items():
        targets = [key]
        if key.startswith("layer4."):
            targets.append("layer4_dual." + key.removeprefix("layer4."))
        if key.startswith("fc."):
            if not classes_match:
                continue
            targets.append("fc_dual." + key.removeprefix("fc."))
        for target_key in targets:
            target = weights[target_key]
            if key == "conv1.weight":
                assert target.shape == (64, 3, 4, 7, 7)
                assert torch.equal(target[:, :, 2], value)
                assert torch.count_nonzero(target[:, :, [0, 1, 3]]) == 0
            elif value.dim() == 4:
                assert target.shape == (*value.shape[:2], 1, *value.shape[2:]), target_key
                assert torch.equal(target[:, :, 0], value), target_key
            else:
                assert torch.equal(target, value), target_key


RESNETS = sifa.list_models("*_resnet*")


@pytest.mark.parametrize("name", RESNETS)
def test_every_2d_weight_lands_where_it_should(tmp_path, name):
    depth = int(name.rsplit("resnet", 1)[1])
    suffix = ".safetensors" if RESNETS.index(name) % 2 else ".pth"
    state = random_checkpoint(depth)
    path = save(state, tmp_path / f"resnet{depth}{suffix}")
    model = sifa.create_model(name, num_classes=1000)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    missing = load_2d_resnet_weights(model, path)
    check_inflated(model, state, classes_match=True)
    new_parts = {k for k in before if ".sifa." in k or ".gc." in k}
    assert set(missing) == new_parts
    for key in missing:
        assert torch.equal(model.state_dict()[key], before[key])  # untouched


def test_classifier_is_dropped_when_class_counts_differ(tmp_path):
    state = random_checkpoint(18)
    path = save(state, tmp_path / "r18.pth")
    model = sifa.create_model("sifa_resnet18", num_classes=7)
    fc_before = model.fc.weight.clone()
    missing = load_2d_resnet_weights(model, path)
    assert {"fc.weight", "fc.bias", "fc_dual.weight", "fc_dual.bias"} <= set(missing)
    assert torch.equal(model.fc.weight, fc_before)
    check_inflated(model, state, classes_match=False)


def test_nested_state_dict_with_module_prefix(tmp_path):
    state = random_checkpoint(18)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = save(wrapped, tmp_path / "wrapped.pth")
    model = sifa.create_model("c2d_resnet18", num_classes=1000)
    load_2d_resnet_weights(model, path)
    check_inflated(model, state, classes_match=True)


def test_shape_mismatch_names_the_key(tmp_path):
    state = random_checkpoint(18)
    state["layer2.1.conv1.weight"] = torch.zeros(128, 128, 5, 5)
    path = save(state, tmp_path / "bad.pth")
    with pytest.raises(
        CheckpointError, match=r"'layer2.1.conv1.weight' has shape \(128, 128, 5, 5\)"
    ):
        load_2d_resnet_weights(sifa.create_model("sifa_resnet18"), path)


def test_checkpoint_of_another_depth_is_refused(tmp_path):
    path = save(random_checkpoint(50), tmp_path / "r50.safetensors")
    with pytest.raises(CheckpointError, match=r"r50.safetensors: checkpoint key 'layer1.0.conv1"):
        load_2d_resnet_weights(sifa.create_model("sifa_resnet18"), path)


def test_extra_keys_are_refused_unless_not_strict(tmp_path):
    state = random_checkpoint(18)
    state["layer3.9.conv1.weight"] = torch.zeros(3)
    path = save(state, tmp_path / "extra.pth")
    model = sifa.create_model("sifa_resnet18", num_classes=1000)
    with pytest.raises(CheckpointError, match=r"no place in the model: layer3.9.conv1.weight"):
        load_2d_resnet_weights(model, path)
    load_2d_resnet_weights(model, path, strict=False)
    check_inflated(model, {k: v for k, v in state.items() if "layer3.9" not in k}, True)


class Payload:
    pass


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"conv1.weight": torch.zeros(1), "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"pickled.pth needs pickled code to load"):
        read_state_dict(path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_missing_and_corrupt_files_are_named(tmp_path, suffix):
    with pytest.raises(CheckpointError, match=r"weight file not found: .*nothing"):
        read_state_dict(tmp_path / f"nothing{suffix}")
    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"corrupt"):
        read_state_dict(corrupt)
