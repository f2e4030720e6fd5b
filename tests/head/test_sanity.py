"""The sanity numbers beside every result: near-chance flag, linear probe, localisation baselines."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.head.sanity import ClipSpans, Probe, linear_probe, localisation, near_chance


def test_near_chance_flags_only_what_binomial_noise_explains():
    assert near_chance(3, 12, 1 / 6)  # 25 % of 12 at chance 16.7 %: noise
    assert not near_chance(9, 12, 1 / 6)  # 75 %: far above
    assert near_chance(0, 0, 0.5)


def test_linear_probe_reads_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    signal = rng.normal(size=(60, 5, 8)) + 3 * np.eye(8)[labels][:, None, :]  # (N, T, D)
    train, test = np.arange(0, 60, 2), np.arange(1, 60, 2)
    war, uar, pred = linear_probe(signal.astype(np.float16), labels, train, test)
    assert war > 90 and uar > 90 and pred.shape == (30,)
    noise = rng.normal(size=(60, 5, 8))
    assert linear_probe(noise, labels, train, test)[0] < 70


def test_the_probe_strength_shrinks_its_weights_and_defaults_to_one():
    """bench/bench_probe.py reads the probe at other strengths; the default (C = 1) is what train-head fits."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 10)
    x = rng.normal(size=(30, 6)) + 2 * np.eye(6)[labels]
    default, one = Probe.fit(x, labels, 3), Probe.fit(x, labels, 3, C=1.0)
    assert np.allclose(default.weight, one.weight)
    assert np.linalg.norm(Probe.fit(x, labels, 3, C=0.01).weight) < 0.5 * np.linalg.norm(one.weight)


def test_localisation_baselines_and_the_strict_criterion():
    spans = ClipSpans.of(n_clips=7, test_offset=15, clip_stride=10, clip_len=15)
    frame_index = np.tile(np.arange(105), (2, 1))  # cached position = original frame number
    apex = [(50, 60), None]  # clip 3 covers 45..59 (centre 52): overlap and strict; clip 2 (35..49) neither
    out = localisation(frame_index, apex, np.array([3, 0]), spans)
    assert out["n_videos"] == 1 and out["overlap"] == 100 and out["strict"] == 100
    # overlapping clips: 2 (35..49)? no; 3 (45..59) yes; 4 (55..69) yes -> 2 of 7; strict: only clip 3's centre 52
    assert out["random_overlap"] == pytest.approx(100 * 2 / 7, abs=0.01)
    assert out["random_strict"] == pytest.approx(100 / 7, abs=0.01)
    assert out["centre_overlap"] == 100 and out["centre_strict"] == 100  # the centre clip is clip 3
    miss = localisation(frame_index, apex, np.array([0, 0]), spans)
    assert miss["overlap"] == 0 and miss["strict"] == 0
    assert localisation(frame_index, [None, None], np.array([0, 0]), spans) is None


def test_linear_probe_on_a_training_fold_of_one_class_predicts_that_class():
    """Tiny datasets (three clips, two folds) leave one class in a training fold: scikit-learn refuses to
    fit, and the probe's only honest answer is the constant."""
    labels = np.array([0, 0, 1])
    feats = np.random.default_rng(0).normal(size=(3, 4, 8))
    war, uar, pred = linear_probe(feats, labels, np.array([0, 1]), np.array([2]))
    assert list(pred) == [0] and war == 0 and uar == 0
