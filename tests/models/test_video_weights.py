"""Fine-tuning from a video checkpoint of the same model: load_video_weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import sifa
from sifa.models import CheckpointError, load_video_weights
from sifa.models.weights import classifier_keys


def tiny(name="sifa_resnet18", classes=5, **switches):
    torch.manual_seed(len(name) + classes)
    return sifa.create_model(name, num_classes=classes, base_width=8, **switches)


def saved(model, path):
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_every_weight_is_copied_when_the_classes_match(tmp_path, suffix):
    source = tiny()
    with torch.no_grad():  # make every tensor distinct from any fresh init
        for value in source.state_dict().values():
            if value.is_floating_point():
                value.add_(torch.rand_like(value))
    target = tiny()
    left = load_video_weights(target, saved(source, tmp_path / f"k{suffix}"))
    assert left == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_another_class_count_leaves_the_classifiers_at_init(tmp_path):
    source, target = tiny(classes=5), tiny(classes=3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    left = load_video_weights(target, saved(source, tmp_path / "k.pth"))
    assert set(left) == {"fc.weight", "fc.bias", "fc_dual.weight", "fc_dual.bias"}
    assert set(left) == set(classifier_keys(target))
    for key, value in target.state_dict().items():
        expected = before[key] if key in left else source.state_dict()[key]
        assert torch.equal(value, expected), key


def test_keep_classifier_false_leaves_a_fitting_classifier_at_init(tmp_path):
    source, target = tiny(), tiny()
    with torch.no_grad():
        source.fc.weight.add_(1.0)
    before = target.fc.weight.clone()
    left = load_video_weights(target, saved(source, tmp_path / "k.pth"), keep_classifier=False)
    assert "fc.weight" in left and torch.equal(target.fc.weight, before)
    assert torch.equal(target.conv1.weight, source.conv1.weight)


def test_swin_classifier_is_its_head():
    model = sifa.create_model("swin_t", num_classes=4)
    assert classifier_keys(model) == ["head.weight", "head.bias"]


def test_a_checkpoint_of_another_model_is_refused_with_its_keys(tmp_path):
    path = saved(tiny("c2d_resnet18"), tmp_path / "c2d.pth")
    with pytest.raises(CheckpointError, match=r"c2d\.pth is not a checkpoint of this ResNet3d.*"
                       r"missing"):  # fmt: skip
        load_video_weights(tiny(), path)


def test_a_shape_mismatch_names_the_key(tmp_path):
    path = saved(tiny(), tmp_path / "k.pth")
    other = sifa.create_model("sifa_resnet18", num_classes=5, base_width=16)
    with pytest.raises(CheckpointError, match=r"conv1\.weight has shape"):
        load_video_weights(other, path)
