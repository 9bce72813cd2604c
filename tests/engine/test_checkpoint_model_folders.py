"""Model folders and ``hf-hub:`` ids wherever a checkpoint goes: ``resolve_checkpoint``,
``load_model``, the ``Predictor``, ``model.init_from``; the same model as the run's, bit for
bit."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import constants
from omegaconf import OmegaConf

from sifa.deploy.publish import publish_run
from sifa.engine.builders import build_model
from sifa.engine.checkpoint import (
    default_output_folder,
    load_model,
    load_training_state,
    resolve_checkpoint,
)
from sifa.engine.predict import Predictor
from sifa.models.errors import CheckpointError
from sifa.models.hub import WEIGHTS_FILE

from hub_fixtures import CLASSES, FrameReader, lay_out_hub_cache, make_run, random_clips


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    run = make_run(root / "run")
    publish_run(run, root / "model")
    return run, root / "model"


def test_a_model_folder_resolves_to_its_weights_and_loads_as_the_run(published):
    run, folder = published
    assert resolve_checkpoint(folder) == folder / WEIGHTS_FILE
    assert resolve_checkpoint(folder / WEIGHTS_FILE) == folder / WEIGHTS_FILE
    model, config, class_names = load_model(folder)
    reference, reference_config, reference_names = load_model(run)
    assert class_names == reference_names == CLASSES
    assert OmegaConf.to_container(config) == OmegaConf.to_container(reference_config)
    reference_state = reference.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference_state[key]), key


def test_the_predictor_gives_the_runs_scores_bit_for_bit(published):
    run, folder = published
    from_run = Predictor(run, device="cpu")
    from_folder = Predictor(folder, device="cpu")
    assert from_folder.checkpoint == folder / WEIGHTS_FILE
    clips = random_clips()
    with torch.no_grad():
        assert torch.equal(from_folder.model(clips), from_run.model(clips))
    reader = FrameReader()
    probabilities = from_folder.probabilities(reader, 0, 24, clips=2)
    assert torch.equal(probabilities, from_run.probabilities(reader, 0, 24, clips=2))
    assert from_folder.top(probabilities, 2) == from_run.top(probabilities, 2)


def test_the_predictor_loads_a_hub_id_from_the_cache_offline(published, tmp_path, monkeypatch):
    run, folder = published
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    snapshot = lay_out_hub_cache(tmp_path, "org/tiny-sifa", folder, revision="v1")
    predictor = Predictor("hf-hub:org/tiny-sifa@v1", device="cpu")
    assert predictor.checkpoint == snapshot / WEIGHTS_FILE
    reader = FrameReader(seed=1)
    expected = Predictor(run, device="cpu").probabilities(reader, 0, 24, clips=2)
    assert torch.equal(predictor.probabilities(reader, 0, 24, clips=2), expected)


def test_default_outputs_go_beside_a_run_and_to_the_current_folder_for_a_model_folder(
    published, tmp_path, monkeypatch
):
    run, folder = published
    monkeypatch.chdir(tmp_path)
    assert default_output_folder(resolve_checkpoint(run)) == run
    assert default_output_folder(resolve_checkpoint(folder)) == tmp_path


def test_init_from_a_model_folder_keeps_the_classifier_only_for_the_same_classes(published):
    run, folder = published
    _, config, _ = load_model(run)
    config.model.init_from = str(folder)
    reference = load_model(run)[0].state_dict()
    same = build_model(config, len(CLASSES), CLASSES).state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in same.items())
    other = build_model(config, len(CLASSES), list(reversed(CLASSES))).state_dict()
    assert not torch.equal(other["fc.weight"], reference["fc.weight"])
    assert torch.equal(other["layer1.0.conv1.weight"], reference["layer1.0.conv1.weight"])


def test_a_folder_that_is_neither_a_run_nor_a_model_folder_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError) as caught:
        resolve_checkpoint(tmp_path)
    assert str(caught.value) == (
        f"no checkpoint (best or last .safetensors) in {tmp_path}, and it is no model folder "
        "(config.json and model.safetensors)"
    )


def test_a_model_folder_has_no_training_state_to_resume(published):
    _, folder = published
    with pytest.raises(CheckpointError, match=r"^training state not found: .*needed to resume"):
        load_training_state(folder)
