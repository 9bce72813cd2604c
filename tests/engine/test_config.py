"""Configs: YAML and overrides merged onto typed defaults, errors that name the key, recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from sifa.engine.builders import build_optimizer, build_train_transform
from sifa.engine.config import ConfigError, from_yaml, load_config, to_yaml
from sifa.engine.demo import DEMO_RECIPE

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_file_then_overrides_onto_defaults(tmp_path):
    path = write(tmp_path, "optim:\n  lr: 0.5\n  epochs: 3\ndata:\n  train: {root: /videos}\n")
    config = load_config(path, ["optim.epochs=7", "model.switches.dual_head=false"])
    assert config.optim.lr == 0.5  # from the file
    assert config.optim.epochs == 7  # the override wins
    assert config.optim.momentum == 0.9  # a default
    assert config.model.switches == {"dual_head": False}
    assert config.data.train.root == "/videos" and config.data.train.format == "video_list"


@pytest.mark.parametrize(
    ("text", "overrides", "named"),
    [
        ("optim:\n  learning_rate: 0.1\n", [], "optim.learning_rate"),
        ("", ["data.batchsize=4"], "data.batchsize"),
        ("data:\n  train: {root: /v, colour: red}\n", [], "data.train.colour"),
        ("optim:\n  lr: fast\n", [], "optim.lr"),
        ("", ["optim.name=adam"], "optim.name"),
        ("", ["precision=fp8"], "precision"),
        ("", ["optim.epochs=0"], "optim.epochs"),
        ("", ["data.test_crops=2"], "data.test_crops"),
        ("", ["optim.label_smoothing=1.5"], "optim.label_smoothing"),
        ("data:\n  train: {format: avi_folder, root: /v}\n", [], "data.train.format"),
        ("data:\n  train: {annotations: a.txt}\n", [], "data.train.root"),
        ("", ["epochs"], "epochs"),
        ("", ["optim.no_weight_decay=head.*"], "optim.no_weight_decay"),
        ("optim:\n  lr_scales: {'*': -1}\n", [], "optim.lr_scales"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, overrides, named):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(path, overrides)


def test_error_names_the_file(tmp_path):
    path = write(tmp_path, "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_round_trip(tmp_path):
    config = load_config(write(tmp_path, "data:\n  train: {root: /v}\n"), ["optim.lr=0.3"])
    again = from_yaml(to_yaml(config))
    assert OmegaConf.to_container(again) == OmegaConf.to_container(config)


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_loads_and_builds_its_model(recipe):
    import sifa

    config = load_config(recipe)
    switches = OmegaConf.to_container(config.model.switches)
    assert config.model.name in sifa.list_models()
    model = sifa.create_model(config.model.name, num_classes=3, **switches)  # the switches exist
    build_optimizer(config, model)  # its parameter-group patterns match the model
    assert "expected" in recipe.read_text().lower()  # the paper's number is stated


def test_demo_recipe_file_is_the_demo():
    recipe = yaml.safe_load((REPO / "configs" / "demo_synthetic.yaml").read_text())

    def subset(wanted: dict, given: dict, where: str = "") -> None:
        for key, value in wanted.items():
            assert key in given, f"configs/demo_synthetic.yaml lacks {where}{key}"
            if isinstance(value, dict):
                subset(value, given[key], f"{where}{key}.")
            else:
                assert given[key] == value, f"{where}{key}: {given[key]!r} != {value!r}"

    subset(DEMO_RECIPE, recipe)


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_transforms_a_training_clip(recipe):
    # Every augmentation a recipe names (RandAugment, erasing, ...) builds and runs on a clip.
    config = load_config(recipe)
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (config.data.clip_len, 120, 160, 3), dtype=torch.uint8)
    clip = build_train_transform(config)(frames)
    size = config.data.train_size
    assert clip.shape == (3, config.data.clip_len, size, size) and clip.isfinite().all()
