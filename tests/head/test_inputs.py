"""The head's input options (pipeline/head/inputs.py): shapes, what each removes, no test-fold leakage."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import CENTERS, TrainHeadConfig
from pipeline.head.baselines import build_head
from pipeline.head.inputs import (RAW, REFERENCE, InputTransform, head_input, input_dim, normalised_people, per_video,
                                  person_offsets)


def _videos(n=12, t=20, d=6, seed=0):
    rng = np.random.default_rng(seed)
    identity = 10 * rng.normal(size=(n, 1, d))  # a constant per-video offset, 10x the expression
    expression = np.zeros((n, t, d))
    expression[:, 8:14, 0] = 1.0  # a transient episode on dimension 0
    return (identity + expression + 0.01 * rng.normal(size=(n, t, d))).astype(np.float16), identity


def test_every_option_says_what_its_streams_are_taken_against():
    assert set(REFERENCE) == set(CENTERS) - {"none"} and set(RAW) <= set(REFERENCE)


@pytest.mark.parametrize("center", CENTERS)
def test_per_video_shapes(center):
    x, _ = _videos()
    out = per_video(x, center)
    assert out.shape == (12, 20, input_dim(center, 6)) and out.dtype == x.dtype
    assert per_video(x[0], center).shape == (20, input_dim(center, 6))  # one video, as predict gives it


@pytest.mark.parametrize("center", [c for c in CENTERS if c != "none"])
def test_reference_options_remove_a_constant_offset_and_keep_the_episode(center):
    x, _ = _videos()
    out = per_video(x, center).astype(np.float32)[..., :6]  # two-stream: the changing half comes first
    assert np.abs(out[:, :5]).max() < 0.1  # neutral frames: identity gone
    assert np.allclose(out[:, 10, 0], 1.0, atol=0.1)  # the episode stays


@pytest.mark.parametrize("center", ["two_stream", "two_stream_first", "two_stream_held"])
def test_two_stream_fit_sees_only_training_rows_and_projects_identity_out(center):
    x, _ = _videos(n=12, d=8)
    feats = torch.from_numpy(per_video(x, center).astype(np.float32))
    subjects = np.repeat(np.arange(6), 2).astype(str)
    train = np.arange(8)
    t = InputTransform(16, center, rank=3)
    t.fit(feats[train], subjects[train])
    before = {k: v.clone() for k, v in t.state_dict().items()}
    changed = feats.clone()
    changed[8:] += 100  # test rows change: the fitted statistics must not
    t2 = InputTransform(16, center, rank=3)
    t2.fit(changed[train], subjects[train])
    for k, v in t2.state_dict().items():
        torch.testing.assert_close(v, before[k])
    basis = t.basis
    torch.testing.assert_close(basis @ basis.T, torch.eye(3), atol=1e-5, rtol=0)  # orthonormal rows
    raw = t(feats)[..., 8:]
    assert torch.allclose(raw @ basis.T, torch.zeros(()), atol=1e-3)  # nothing left along identity directions


def test_the_held_stream_is_the_videos_median_frame_so_a_passing_distractor_does_not_move_it():
    x, identity = _videos()
    x[:, 15:18, 3] += 50  # a passing occluder on 3 of 20 frames
    raw = per_video(x, "two_stream_held").astype(np.float32)[..., 6:]
    assert np.allclose(raw, raw[:, :1], atol=1e-2)  # one level for the whole video
    assert np.allclose(raw[:, 0], identity[:, 0], atol=0.1)  # the held level, neither episode nor occluder
    x[:, :, 2] += 1.0  # an expression held from the first frame to the last (sustained)
    held = per_video(x, "two_stream_held").astype(np.float32)
    assert np.allclose(held[:, :, 2], 0.0, atol=0.1) and np.allclose(held[:, 0, 8], identity[:, 0, 2] + 1, atol=0.1)


def test_the_fitted_input_travels_in_the_head_state_dict():
    cfg = TrainHeadConfig(center="two_stream", identity_rank=2, hidden=8)
    model = build_head(cfg, 12, 3)
    keys = set(model.state_dict())
    assert {"input.mean", "input.basis"} <= keys and any(k.startswith("head.") for k in keys)
    assert model(torch.randn(2, 7, 5, 12)).logits.shape == (2, 3)


def test_identity_directions_leave_the_class_directions_alone():
    """Subjects with unbalanced classes (the wild datasets): a subject's plain mean frame points along its
    most frequent expression. The identity directions come from what the class does not explain, so a
    held expression survives the projection; and the rank is capped by what the subjects can span."""
    rng = np.random.default_rng(0)
    n_subj, d = 6, 8
    labels = np.repeat([0, 1], 30)  # subjects 0-2 mostly class 0, 3-5 mostly class 1
    subjects = np.concatenate([rng.choice([0, 1, 2], 27), rng.choice([3, 4, 5], 3),
                               rng.choice([0, 1, 2], 3), rng.choice([3, 4, 5], 27)]).astype(str)
    identity = {str(s): np.r_[0, 0, 5 * rng.normal(size=d - 2)] for s in range(n_subj)}  # dims 2..7
    x = np.stack([identity[s] for s in subjects]) + 3.0 * np.eye(d)[labels]  # class on dims 0 and 1
    x = torch.from_numpy(np.repeat(x[:, None, :], 4, axis=1).astype(np.float32))  # (N, T=4, D)
    feats = torch.cat([torch.zeros_like(x), x], dim=-1)  # a two-stream input: [changing : raw]
    t = InputTransform(2 * d, "two_stream_first", rank=64)
    t.fit(feats, subjects, labels)
    assert t.basis.shape == (d, d) and int((t.basis.abs().sum(dim=1) > 0).sum()) == n_subj - 1
    assert t.basis[:, :2].abs().max() < 0.05  # the class axes are untouched (0.22 from plain subject means)
    raw = t(feats)[..., d:].mean(dim=1).numpy()
    gap = raw[labels == 1, 1].mean() - raw[labels == 1, 0].mean()
    assert gap > 2.5  # the held class survives the projection (0.77 from plain subject means)


def test_raw_dropout_zeroes_whole_videos_raw_stream_in_training_only():
    x, _ = _videos()
    t = InputTransform(12, "two_stream_first", rank=2, raw_dropout=0.5)
    xs = torch.from_numpy(per_video(x, "two_stream_first")).float()
    t.fit(xs, np.array([f"s{i % 4}" for i in range(12)]))
    torch.manual_seed(0)
    t.train()
    out = t(xs[:, None])  # (B, 1, T, 12) as a batch of clips reaches it
    raw = out[..., 6:].flatten(1)
    dropped = (raw == 0).all(dim=1)
    assert 0 < int(dropped.sum()) < 12  # some videos lose the raw stream, whole
    assert torch.equal(out[..., :6], xs[:, None, :, :6])  # the changing stream is never touched
    t.eval()
    assert not (t(xs[:, None])[..., 6:].flatten(1) == 0).all(dim=1).any()  # never at test time
    t.train()
    with torch.no_grad():  # nor for the linear probe, which reads the input without gradients
        assert not (t(xs[:, None])[..., 6:].flatten(1) == 0).all(dim=1).any()


def _people(n_people=4, per_person=6, t=10, d=5, seed=1):
    """Each person: a large constant offset (identity); each video: one of `per_person` expression levels."""
    rng = np.random.default_rng(seed)
    identity = 10 * rng.normal(size=(n_people, 1, 1, d))
    expression = np.broadcast_to(np.arange(per_person, dtype=float)[None, :, None, None], (n_people, per_person, 1, d))
    x = (identity + expression + 0.01 * rng.normal(size=(n_people, per_person, t, d))).reshape(-1, t, d)
    subjects = np.repeat([f"p{i}" for i in range(n_people)], per_person)
    return x.astype(np.float16), subjects, np.tile(np.arange(per_person), n_people)


def test_subject_norm_removes_each_persons_offset_and_keeps_the_expression_between_videos():
    x, subjects, level = _people()
    cfg = TrainHeadConfig(center="none", subject_norm=True)
    out = head_input(x, cfg, subjects, n_classes=6).astype(np.float32)
    video = out.mean(axis=1)[:, 0]
    # Identity (std 10) gone: the same expression level reads the same for every person, and levels stay apart.
    assert np.allclose(video, np.tile(np.arange(6) - 2.5, 4), atol=0.05)
    assert np.abs(per_video(x, "none").astype(np.float32).mean(axis=1)[:, 0] - video).max() > 1  # it did something
    # Off: the input is per_video's.
    off = TrainHeadConfig(center="none", subject_norm=False)
    assert np.array_equal(head_input(x, off, subjects, 6), per_video(x, "none"))


def test_subject_norm_leaves_people_with_fewer_videos_than_classes_alone():
    x, subjects, _ = _people()
    subjects = subjects.astype(object)
    subjects[:6] = [f"solo{i}" for i in range(6)]  # person 0's videos, one "person" each: their mean is their expression
    assert normalised_people(subjects, 6) == ["p1", "p2", "p3"]
    offsets = person_offsets(x, subjects, 6)
    assert np.all(offsets[:6] == 0) and np.all(offsets[6:] != 0)
    out = head_input(x, TrainHeadConfig(center="none", subject_norm=True), subjects, 6)
    assert np.array_equal(out[:6], x[:6])


def test_subject_norm_uses_no_label_and_only_the_persons_own_videos():
    """The offset of a person is the same whoever else is in the dataset: no statistic crosses people (or folds)."""
    x, subjects, _ = _people()
    alone = person_offsets(x[6:12], subjects[6:12], 6)
    together = person_offsets(x, subjects, 6)[6:12]
    assert np.allclose(alone, together)


def test_predict_of_one_video_of_an_unknown_person_drops_the_raw_stream_as_raw_dropout_does():
    from types import SimpleNamespace

    from pipeline.commands.predict import unknown_person
    from pipeline.errors import PipelineError

    x, subjects, _ = _people(d=8)
    cfg = TrainHeadConfig(center="two_stream_first", subject_norm=True, identity_rank=2, hidden=16)
    feats = head_input(x, cfg, subjects, 6)
    model = build_head(cfg, input_dim(cfg.center, 8), 6)
    model.input.fit(torch.from_numpy(feats.astype(np.float32)), subjects)
    one = unknown_person(per_video(x[0], cfg.center), SimpleNamespace(config=cfg, model=model))
    out = model.input.eval()(torch.from_numpy(one.astype(np.float32)))
    assert torch.allclose(out[..., 8:], torch.zeros(()), atol=1e-2)  # raw stream: zero after the fitted centring
    assert np.array_equal(one[..., :8], per_video(x[0], cfg.center)[..., :8])  # the changing stream as it was
    none = TrainHeadConfig(center="none", subject_norm=True)
    with pytest.raises(PipelineError, match="subject_norm and center none"):
        unknown_person(per_video(x[0], "none"), SimpleNamespace(config=none, model=None))


@pytest.mark.parametrize("center", ["none", "two_stream_first"])
def test_standardize_puts_every_input_dimension_on_one_scale_fitted_on_training_rows(center):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 20, 6)).astype(np.float32)
    x[..., 3:] *= 50  # a block 50x larger (flow in pixels beside a backbone's activations)
    feats = torch.from_numpy(per_video(x, center))
    subjects = np.repeat(list("abcdef"), 2)
    t = InputTransform(feats.shape[-1], center, rank=2, standardize=True)
    t.fit(feats[:8], subjects[:8])
    std = t.eval()(feats[:8]).reshape(-1, feats.shape[-1]).std(0)
    assert torch.allclose(std, torch.ones_like(std), atol=0.02)
    t2 = InputTransform(feats.shape[-1], center, rank=2, standardize=True)
    t2.fit(torch.cat([feats[:8], 100 * feats[8:]]), subjects)
    assert not torch.allclose(t.scale, t2.scale)  # the rows it is given decide: the test fold's are never given
    assert "scale" not in InputTransform(feats.shape[-1], center).state_dict()  # old checkpoints keep loading


def test_after_subject_norm_no_identity_direction_is_projected_out():
    """The people's mean frames then coincide: the SVD of their rounding noise must not name directions."""
    x, subjects, level = _people(n_people=6, d=8)
    cfg = TrainHeadConfig(center="two_stream_first", subject_norm=True, identity_rank=4)
    feats = torch.from_numpy(head_input(x, cfg, subjects, 6).astype(np.float32))
    t = InputTransform(feats.shape[-1], cfg.center, rank=4)
    t.fit(feats, subjects, level)
    assert torch.count_nonzero(t.basis) == 0
    t.fit(torch.from_numpy(per_video(x, cfg.center).astype(np.float32)), subjects, level)  # without: identity is there
    assert torch.count_nonzero(t.basis.abs().sum(1)) == 4


def test_person_offsets_leave_out_rows_that_hold_no_features():
    """A per-fold cache leaves the videos finetune dropped as zero rows: they must not pull their person's mean."""
    x, subjects, _ = _people()
    holed = x.copy()
    holed[0] = 0
    present = np.ones(len(x), bool)
    present[0] = False
    with_hole = person_offsets(holed, subjects, 5, present)
    assert np.allclose(with_hole[1:6], x[1:6].astype(np.float32).mean(axis=(0, 1)), atol=1e-3)
    assert not np.allclose(person_offsets(holed, subjects, 5)[1], with_hole[1])  # counted, the zeros would pull it


def test_head_input_skips_offsets_that_cancel_or_are_zero():
    x, subjects, _ = _people()
    for center in ("first_frames", "video_median"):
        cfg = TrainHeadConfig(center=center, subject_norm=True)
        assert np.array_equal(head_input(x, cfg, subjects, 6), per_video(x, center))
    solo = TrainHeadConfig(center="none", subject_norm=True)
    assert np.array_equal(head_input(x, solo, [f"v{i}" for i in range(len(x))], 6), per_video(x, "none"))
