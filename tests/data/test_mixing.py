"""Mixup and cutmix of batches: hand computations, the cutmix box, soft targets, seeding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sifa.data.mixing import BatchMixer, mixing_generator

CLASSES = 5


def batch(n: int = 4, shape=(3, 4, 10, 12), seed: int = 0):
    """Clips ``(n, *shape)`` of distinct values and labels that differ from their partner's."""
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(n, *shape, generator=generator)
    labels = torch.arange(n) % CLASSES
    return clips, labels


def one_hot(labels):
    return F.one_hot(labels, CLASSES).float()


def mix(mixer, clips, labels, *ids):
    return mixer(clips, labels, generator=mixing_generator(*(ids or (0, 0, 0, 0))))


def test_mixup_is_the_hand_computation_with_the_reported_lam():
    clips, labels = batch()
    before = clips.clone()
    mixer = BatchMixer(CLASSES, mixup_alpha=0.8)
    mixed = mix(mixer, clips, labels)
    lam = mixed.lam
    assert mixed.mode == "mixup" and mixed.box is None and 0 < lam < 1
    torch.testing.assert_close(mixed.clips, lam * clips + (1 - lam) * clips.flip(0))
    expected = lam * one_hot(labels) + (1 - lam) * one_hot(labels.flip(0))
    torch.testing.assert_close(mixed.targets, expected)
    torch.testing.assert_close(mixed.targets.sum(1), torch.ones(4))
    assert torch.equal(clips, before)  # the input is left as it was


def test_cutmix_pastes_one_box_from_the_flipped_batch_into_every_frame():
    clips, labels = batch()
    partners = clips.flip(0)
    height, width = clips.shape[-2:]
    mixer = BatchMixer(CLASSES, cutmix_alpha=1.0)
    clipped = 0
    for index in range(24):
        mixed = mix(mixer, clips, labels, 3, 1, 0, index)
        assert mixed.mode == "cutmix"
        top, bottom, left, right = mixed.box
        assert 0 <= top <= bottom <= height and 0 <= left <= right <= width
        inside = torch.zeros(height, width, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        # Every clip, channel and frame: the box from the partner, the rest from the clip.
        assert torch.equal(mixed.clips[..., inside], partners[..., inside])
        assert torch.equal(mixed.clips[..., ~inside], clips[..., ~inside])
        changed = (mixed.clips != clips).any(0).any(0)  # (T, H, W): where any value changed
        assert all(torch.equal(frame, inside) for frame in changed)  # the same box in all T
        area = (bottom - top) * (right - left)
        assert mixed.lam == pytest.approx(1 - area / (height * width), abs=1e-12)
        lam = mixed.lam
        expected = lam * one_hot(labels) + (1 - lam) * one_hot(labels.flip(0))
        torch.testing.assert_close(mixed.targets, expected)
        torch.testing.assert_close(mixed.targets.sum(1), torch.ones(4))
        on_own = mixed.targets[torch.arange(4), labels]
        torch.testing.assert_close(on_own, torch.full((4,), lam))
        torch.testing.assert_close(mixed.targets[torch.arange(4), labels.flip(0)],
                                   torch.full((4,), 1 - lam))  # fmt: skip
        clipped += top == 0 or left == 0 or bottom == height or right == width
    assert clipped  # some boxes reached the frame's border (and lam was corrected)


def test_the_same_seed_epoch_rank_and_batch_mix_the_same_and_others_differ():
    clips, labels = batch()
    mixer = BatchMixer(CLASSES, mixup_alpha=0.8, cutmix_alpha=1.0)
    first, again = mix(mixer, clips, labels, 7, 2, 1, 5), mix(mixer, clips, labels, 7, 2, 1, 5)
    assert torch.equal(first.clips, again.clips) and torch.equal(first.targets, again.targets)
    assert (first.lam, first.mode, first.box) == (again.lam, again.mode, again.box)
    for ids in [(8, 2, 1, 5), (7, 3, 1, 5), (7, 2, 0, 5), (7, 2, 1, 6), (-7, 2, 1, 5)]:
        assert mix(mixer, clips, labels, *ids).lam != first.lam, ids
    mixup = BatchMixer(CLASSES, mixup_alpha=0.8)  # continuous lam (cutmix's is in pixels)
    lams = {mix(mixup, clips, labels, seed, 0, 0, 0).lam for seed in range(10)}
    assert len(lams) == 10


def test_mixing_leaves_the_global_random_state_alone():
    clips, labels = batch()
    state = torch.get_rng_state()
    mix(BatchMixer(CLASSES, mixup_alpha=0.8, cutmix_alpha=1.0), clips, labels)
    assert torch.equal(torch.get_rng_state(), state)


def test_mix_prob_zero_leaves_the_batch_as_it_is():
    clips, labels = batch()
    mixer = BatchMixer(CLASSES, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.0)
    for index in range(5):
        mixed = mix(mixer, clips, labels, 0, 0, 0, index)
        assert mixed.clips is clips and (mixed.lam, mixed.mode, mixed.box) == (1.0, None, None)
        assert torch.equal(mixed.targets, one_hot(labels))


def test_switch_and_mix_probabilities_are_honoured():
    clips, labels = batch(2, (1, 1, 4, 4))
    draws = 2000  # a binomial proportion's standard deviation is at most 0.0112
    mixer = BatchMixer(CLASSES, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.6, switch_prob=0.3)
    modes = [mix(mixer, clips, labels, 0, 0, 0, i).mode for i in range(draws)]
    mixed = draws - modes.count(None)
    assert abs(mixed / draws - 0.6) < 0.05
    assert abs(modes.count("cutmix") / mixed - 0.3) < 0.06
    only_cutmix = BatchMixer(CLASSES, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=1.0)
    assert {mix(only_cutmix, clips, labels, 0, 0, 0, i).mode for i in range(50)} == {"cutmix"}


@pytest.mark.parametrize("alpha", [0.8, 0.2])
def test_lam_follows_beta_alpha_alpha(alpha):
    clips, labels = batch(2, (1, 1, 2, 2))
    mixer = BatchMixer(CLASSES, mixup_alpha=alpha)
    lams = torch.tensor([mix(mixer, clips, labels, 1, 0, 0, i).lam for i in range(2000)])
    assert abs(lams.mean() - 0.5) < 0.03  # standard deviations of about 0.007 and 0.009
    assert abs(lams.var() - 1 / (4 * (2 * alpha + 1))) < 0.012


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_odd_batches_and_a_batch_of_one_mix_a_clip_with_itself(mode):
    alphas = {"mixup_alpha": 0.8} if mode == "mixup" else {"cutmix_alpha": 1.0}
    mixer = BatchMixer(CLASSES, **alphas)
    clips, labels = batch(3)
    mixed = mix(mixer, clips, labels)
    assert mixed.mode == mode and 0 < mixed.lam < 1
    torch.testing.assert_close(mixed.clips[1], clips[1])  # the middle clip is its own partner
    assert torch.equal(mixed.targets[1], one_hot(labels)[1])
    assert not torch.allclose(mixed.clips[0], clips[0])
    clip, label = batch(1)
    alone = mix(mixer, clip, label)
    torch.testing.assert_close(alone.clips, clip)
    assert torch.equal(alone.targets, one_hot(label))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_classes": 0, "mixup_alpha": 1.0}, "num_classes must be an integer >= 1"),
        ({"mixup_alpha": -0.1}, "mixup_alpha must be a finite number >= 0"),
        ({"cutmix_alpha": float("nan")}, "cutmix_alpha must be a finite number >= 0"),
        ({}, "mixup_alpha or cutmix_alpha must be > 0"),
        ({"mixup_alpha": 1.0, "prob": 1.5}, r"prob must be in \[0, 1\], got 1.5"),
        ({"mixup_alpha": 1.0, "switch_prob": -1}, r"switch_prob must be in \[0, 1\]"),
    ],
)
def test_bad_settings_are_named(arguments, message):
    arguments = {"num_classes": CLASSES, **arguments}
    with pytest.raises(ValueError, match=message):
        BatchMixer(**arguments)


@pytest.mark.parametrize(
    ("clips", "labels", "message"),
    [
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long), r"\(N, C, T, H, W\).*\(2, 3"),
        (torch.zeros(2, 3, 1, 4, 4, dtype=torch.long), torch.zeros(2, dtype=torch.long),
         "floating-point"),
        (torch.zeros(2, 3, 1, 4, 4), torch.zeros(2), r"integer class indices \(N,\)"),
        (torch.zeros(2, 3, 1, 4, 4), torch.zeros(2, 5), r"integer class indices"),
        (torch.zeros(2, 3, 1, 4, 4), torch.zeros(3, dtype=torch.long),
         r"clips \(2, 3, 1, 4, 4\) and labels \(3,\)"),
        (torch.zeros(0, 3, 1, 4, 4), torch.zeros(0, dtype=torch.long), r"\(>= 1\)"),
        (torch.zeros(2, 3, 1, 4, 4), torch.tensor([0, 5]), r"in \[0, 5\), got values from 0 to 5"),
        (torch.zeros(2, 3, 1, 4, 4), torch.tensor([-1, 2]), r"from -1 to 2"),
    ],
)  # fmt: skip
def test_bad_batches_are_named(clips, labels, message):
    with pytest.raises(ValueError, match=message):
        mix(BatchMixer(CLASSES, mixup_alpha=1.0), clips, labels)


def test_negative_positions_are_refused():
    with pytest.raises(ValueError, match="epoch, rank and batch must be >= 0"):
        mixing_generator(0, -1, 0, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_clips_on_the_gpu_mix_as_on_the_cpu():
    clips, labels = batch()
    mixer = BatchMixer(CLASSES, mixup_alpha=0.8, cutmix_alpha=1.0)
    for index in range(4):
        cpu = mix(mixer, clips, labels, 0, 0, 0, index)
        gpu = mix(mixer, clips.cuda(), labels.cuda(), 0, 0, 0, index)
        assert gpu.clips.is_cuda and gpu.targets.is_cuda
        assert (gpu.lam, gpu.mode, gpu.box) == (cpu.lam, cpu.mode, cpu.box)
        torch.testing.assert_close(gpu.clips.cpu(), cpu.clips)
        torch.testing.assert_close(gpu.targets.cpu(), cpu.targets)
