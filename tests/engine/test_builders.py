"""The frame sampler a config asks for, in training, evaluation and prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sifa.data.sampling import DenseSampler, SegmentSampler
from sifa.engine.builders import build_eval_set, build_model, build_sampler, build_train_set
from sifa.engine.checkpoint import load_weights
from sifa.engine.config import ConfigError
from sifa.engine.predict import Predictor

from training_fixtures import tiny_config


def test_segment_sampling_spreads_clip_len_frames_over_the_video(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, data__sampling="segment", data__clip_len=4)
    train = build_sampler(config, training=True)
    assert isinstance(train, SegmentSampler) and train.random_offset
    # 40 frames in 4 segments of 10: a random frame inside each segment.
    for _ in range(20):
        indices = train(40, torch.Generator().manual_seed(_))[0]
        assert [i // 10 for i in indices] == [0, 1, 2, 3]
    test = build_sampler(config, training=False, clips=2)
    assert test(40).tolist() == [[2, 12, 22, 32], [7, 17, 27, 37]]


def test_dense_sampling_is_the_default(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, data__frame_interval=2, data__clip_len=4)
    sampler = build_sampler(config, training=False, clips=1)
    assert isinstance(sampler, DenseSampler)
    assert np.diff(sampler(40)[0]).tolist() == [2, 2, 2]


def test_datasets_use_the_configured_sampling(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, data__sampling="segment", data__clip_len=4)
    train_set = build_train_set(config, seed=0)
    assert isinstance(train_set.sampler, SegmentSampler)
    clip, _ = train_set[0]
    assert clip.shape[1] == 4  # (C, T, H, W)
    val_set = build_eval_set(config, "val", clips=2, crops=1)
    assert isinstance(val_set.sampler, SegmentSampler) and val_set.sampler.num_clips == 2
    views, _ = val_set[0]
    assert views.shape[:3] == (2, 3, 4)


def test_segment_sampling_refuses_a_frame_interval(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, data__sampling="segment", data__frame_interval=2)
    with pytest.raises(ConfigError, match=r"data\.frame_interval"):
        build_train_set(config, seed=0)


def test_prediction_samples_as_the_training_config(trained_run):
    predictor = Predictor(trained_run)
    assert isinstance(predictor._sampler(1), DenseSampler)
    predictor.config.data.sampling = "segment"
    sampler = predictor._sampler(3)
    assert isinstance(sampler, SegmentSampler) and sampler.num_clips == 3


def test_init_from_a_run_keeps_its_classifier_for_the_same_classes(trained_run, tiny_data):
    config = tiny_config(
        tiny_data, trained_run.parent / "unused", model__init_from=str(trained_run)
    )
    weights, metadata = load_weights(trained_run)
    names = json.loads(metadata["class_names"])
    model = build_model(config, len(names), names)
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_init_from_a_run_with_other_classes_leaves_the_classifier_at_init(trained_run, tiny_data):
    config = tiny_config(
        tiny_data, trained_run.parent / "unused", model__init_from=str(trained_run)
    )
    weights, metadata = load_weights(trained_run)
    names = [f"other {n}" for n in json.loads(metadata["class_names"])]
    model = build_model(config, len(names), names)
    assert not torch.equal(model.fc.weight, weights["fc.weight"])
    assert torch.equal(model.conv1.weight, weights["conv1.weight"])


def test_init_from_and_pretrained_together_are_refused(trained_run, tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, model__init_from=str(trained_run),
                         model__pretrained="x.pth")  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.pretrained and model\.init_from"):
        build_model(config, 2)
