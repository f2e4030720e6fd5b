"""`train_head.fusion: probe`: the head's class probabilities averaged with the linear probe's (pipeline/head/fusion.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.config import TrainHeadConfig
from pipeline.head.fusion import ProbeFusion
from pipeline.head.inputs import per_video
from pipeline.head.sanity import fit_probe, linear_probe
from pipeline.head.train import cross_validate, make_folds
from tests.head.test_fold_stack import small_cache


def separable(n: int = 60, dim: int = 12, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.standard_normal((n, dim)) + 1.5 * np.eye(classes, dim)[y]
    return x.astype(np.float32), y


@pytest.mark.parametrize("classes", [4, 2])
def test_the_torch_probe_is_sklearns_probe(classes):
    """Its buffers give the probabilities of the fitted scikit-learn probe (multinomial, and sklearn's one-logit
    binary form), so a checkpoint reproduces the probe without scikit-learn at predict time."""
    x, y = separable(classes=classes)
    scaler, clf = fit_probe(x[:40], y[:40])
    fused = ProbeFusion.fit(x[:40], y[:40], classes)
    want = clf.predict_proba(scaler.transform(x[40:]))
    np.testing.assert_allclose(fused(torch.from_numpy(x[40:])).numpy(), want, rtol=1e-4, atol=1e-6)


def test_a_class_the_fold_never_saw_gets_probability_zero():
    x, y = separable(classes=4)
    train = y != 2
    p = ProbeFusion.fit(x[train], y[train], 4)(torch.from_numpy(x)).numpy()
    assert np.all(p[:, 2] == 0) and np.allclose(p.sum(1), 1)
    scaler, clf = fit_probe(x[train], y[train])
    np.testing.assert_allclose(p[:, [0, 1, 3]], clf.predict_proba(scaler.transform(x)), rtol=1e-4, atol=1e-6)
    one = ProbeFusion.fit(x[y == 1], y[y == 1], 4)(torch.from_numpy(x)).numpy()
    assert np.array_equal(one, np.eye(4)[np.ones(len(x), int)])


def test_fused_probs_are_the_mean_of_the_head_and_the_reported_probe():
    """Fusion happens after training: the head's weights and history are the same with it on or off, and the fused
    probabilities minus the head's half are the probe whose WAR train-head reports beside the head's."""
    feats, labels, subjects = small_cache()
    folds = make_folds(labels, subjects, k=3, seed=0)
    cfg = TrainHeadConfig(folds=3, epochs=2, batch_size=4, hidden=16, threads=1, fold_workers=1, device="cpu",
                          center="two_stream_first", identity_rank=2, fusion="none")
    alone = cross_validate(cfg, feats, labels, folds, 3, subjects=subjects, probe=True)
    fused = cross_validate(dataclasses.replace(cfg, fusion="probe"), feats, labels, folds, 3, subjects=subjects,
                           probe=True)
    for a, b in zip(alone, fused):
        assert [e.test_war for e in a.history] == [e.test_war for e in b.history]
        assert {k for k in b.state_dict if k.startswith("fusion.")} == {f"fusion.{k}" for k in ("mean", "scale",
                                                                                                  "weight", "bias")}
        probe = 2 * b.probs - a.probs
        np.testing.assert_allclose(probe.sum(1), 1, atol=1e-5)
        assert np.all(probe > -1e-5)
        truth = labels[b.test]
        assert 100 * np.mean(probe.argmax(1) == truth) == pytest.approx(b.probe[0])
        assert b.probe == a.probe
        assert not np.allclose(a.probs, b.probs)


def test_the_reported_probe_is_the_one_fused():
    """One probe, two uses: `linear_probe` (the sanity number) predicts what the fused probe ranks first."""
    x, y = separable()
    train, test = np.arange(40), np.arange(40, 60)
    _, _, pred = linear_probe(x[:, None], y, train, test)
    p = ProbeFusion.fit(x[train], y[train], 4)(torch.from_numpy(x[test])).numpy()
    assert np.array_equal(pred, p.argmax(1))


def test_the_probe_share_weights_the_mix_and_the_checkpoint_keeps_it(tmp_path):
    """`fusion_weight` w: train-head scores (1 - w) head + w probe, with the probe the 0.5 run's; a checkpoint carries w
    (`predict` applies it) and one written before the key existed reloads as the mean."""
    from pipeline.head.sampling import ClipSampler
    from pipeline.head.train import load_head, predict, save_head

    feats, labels, subjects = small_cache()
    folds = make_folds(labels, subjects, k=3, seed=0)
    cfg = TrainHeadConfig(folds=3, epochs=2, batch_size=4, hidden=16, threads=1, fold_workers=1, device="cpu",
                          center="two_stream_first", identity_rank=2, fusion="none")
    alone = cross_validate(cfg, feats, labels, folds, 3, subjects=subjects)
    mean = cross_validate(dataclasses.replace(cfg, fusion="probe"), feats, labels, folds, 3, subjects=subjects)
    heavy_cfg = dataclasses.replace(cfg, fusion="probe", fusion_weight=0.8)
    heavy = cross_validate(heavy_cfg, feats, labels, folds, 3, subjects=subjects)
    for a, m, h in zip(alone, mean, heavy):
        probe = 2 * m.probs - a.probs
        np.testing.assert_allclose(h.probs, 0.2 * a.probs + 0.8 * probe, atol=1e-5)
    res, fold = heavy[0], folds[0]
    path = tmp_path / "fold-0.pt"
    save_head(path, res.state_dict, heavy_cfg, kind="ceflnet", in_dim=feats.shape[-1] // 2, class_names=["a", "b", "c"],
              fold=0, test_video_ids=[], provenance={})  # in_dim: the backbone width, half the two-stream input
    loaded = load_head(path)
    assert loaded.config.fusion_weight == 0.8 and loaded.model.fusion.share == 0.8
    sampler = ClipSampler.from_config(loaded.config, feats.shape[1])
    out = predict(loaded.model, torch.from_numpy(feats), torch.as_tensor(fold.test), sampler)["probs"].numpy()
    np.testing.assert_allclose(out, res.probs, atol=1e-5)
    ck = torch.load(path, weights_only=True)
    del ck["train_head"]["fusion_weight"]
    torch.save(ck, path)
    assert load_head(path).model.fusion.share == 0.5


def test_the_probe_share_is_checked():
    assert any("fusion_weight" in p for p in TrainHeadConfig(fusion_weight=1.5).check("train_head"))
    assert not TrainHeadConfig(fusion_weight=1.0).check("train_head")


def test_the_rich_clip_is_read_from_the_map_of_the_class_finally_given(tmp_path):
    """Eq. 6's emotion-rich clip is the clip the predicted class's map rates highest; with fusion the predicted class
    is the fused one. train-head's results, a reloaded checkpoint's `predict` and `rich_clips` agree on it (the
    head's map: `rich_clip: head`, the paper's)."""
    from pipeline.head.fusion import rich_clips
    from pipeline.head.sampling import ClipSampler
    from pipeline.head.train import load_head, predict, save_head

    scores = torch.tensor([[[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]]])  # 1 video, 2 classes, 3 clips
    assert rich_clips(scores, torch.tensor([[0.9, 0.1]])).tolist() == [1]
    assert rich_clips(scores, torch.tensor([[0.2, 0.8]])).tolist() == [0]

    feats, labels, subjects = small_cache()
    folds = make_folds(labels, subjects, k=3, seed=0)
    cfg = TrainHeadConfig(folds=3, epochs=2, batch_size=4, hidden=16, threads=1, fold_workers=1, device="cpu",
                          center="two_stream_first", identity_rank=2, fusion="probe", fusion_weight=0.9, rich_clip="head")
    results = cross_validate(cfg, feats, labels, folds, 3, subjects=subjects)
    alone = cross_validate(dataclasses.replace(cfg, fusion="none"), feats, labels, folds, 3, subjects=subjects)
    moved = 0
    for res, head in zip(results, alone):
        np.testing.assert_allclose(res.clip_scores, head.clip_scores)  # the maps are the head's
        want = [int(np.argmax(s[c])) for s, c in zip(res.clip_scores, res.probs.argmax(1))]
        assert res.rich_clip.tolist() == want
        moved += int((head.probs.argmax(1) != res.probs.argmax(1)).sum())
    assert moved  # the probe changed some video's class: the case this is about
    res, fold = results[0], folds[0]
    path = tmp_path / "fold-0.pt"
    save_head(path, res.state_dict, cfg, kind="ceflnet", in_dim=feats.shape[-1] // 2, class_names=["a", "b", "c"],
              fold=0, test_video_ids=[], provenance={})
    loaded = load_head(path)
    out = predict(loaded.model, torch.from_numpy(feats), torch.as_tensor(fold.test),
                  ClipSampler.from_config(loaded.config, feats.shape[1]))
    assert out["rich_clip"].tolist() == res.rich_clip.tolist()


def episodes(n: int = 48, dim: int = 12, classes: int = 3, seed: int = 0):
    """Transient videos: each person's own face on every frame, class c's direction added over one 15-frame episode
    whose start varies from video to video (inside the test window, frames 15-89). Returns the two_stream_first
    head input, labels, subjects and each video's episode start."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    subjects = np.array([f"S{i % 8}" for i in range(n)])
    faces = {s: 2.0 * rng.standard_normal(dim) for s in np.unique(subjects)}
    x = np.stack([faces[s] + 0.3 * rng.standard_normal((105, dim)) for s in subjects])
    start = rng.integers(15, 76, n)
    for i in range(n):
        x[i, start[i]:start[i] + 15] += 3.0 * np.eye(classes, dim)[y[i]]
    return per_video(x.astype(np.float16), "two_stream_first"), y, subjects, start


def test_the_probe_locates_the_episode_and_changes_no_probability(tmp_path):
    """`rich_clip: probe`: the emotion-rich clip is the test clip on whose frames the fused probe finds the
    predicted class most (its logit on each clip's pooled input, by hand here from the saved buffers), it lies on
    the episode, a reloaded checkpoint picks the same clips, and the class probabilities are `rich_clip: head`'s."""
    from pipeline.head.sampling import ClipSampler
    from pipeline.head.sanity import ClipSpans, localisation
    from pipeline.head.train import load_head, predict, save_head

    feats, labels, subjects, start = episodes()
    folds = make_folds(labels, subjects, k=4, seed=0)
    cfg = TrainHeadConfig(folds=4, epochs=2, batch_size=4, hidden=16, threads=1, fold_workers=1, device="cpu",
                          center="two_stream_first", identity_rank=2, fusion="probe", rich_clip="probe")
    results = cross_validate(cfg, feats, labels, folds, 3, subjects=subjects)
    heads = cross_validate(dataclasses.replace(cfg, rich_clip="head"), feats, labels, folds, 3, subjects=subjects)
    spans = ClipSpans.of(cfg.n_clips, cfg.test_offset, cfg.clip_stride, cfg.clip_len)
    chosen, apex, frames, right = [], [], [], []
    for res, head, fold in zip(results, heads, folds):
        np.testing.assert_array_equal(res.probs, head.probs)
        path = tmp_path / f"fold-{fold.index}.pt"
        save_head(path, res.state_dict, cfg, kind="ceflnet", in_dim=feats.shape[-1] // 2,
                  class_names=["a", "b", "c"], fold=fold.index, test_video_ids=[], provenance={})
        loaded = load_head(path)
        x = loaded.model.input(torch.from_numpy(feats[fold.test]).float()).detach().numpy()  # (n, T, D)
        fb = {k: v.numpy() for k, v in loaded.model.fusion.state_dict().items()}
        clip_means = np.stack([x[:, a:b + 1].mean(1) for a, b in zip(spans.start, spans.end)], 1)  # (n, clips, D)
        z = ((clip_means - fb["mean"]) / fb["scale"]) @ fb["weight"].T + fb["bias"]  # (n, clips, C)
        want = z[np.arange(len(fold.test)), :, res.probs.argmax(1)].argmax(1)
        assert res.rich_clip.tolist() == want.tolist()
        out = predict(loaded.model, torch.from_numpy(feats), torch.as_tensor(fold.test),
                      ClipSampler.from_config(loaded.config, feats.shape[1]))
        assert out["rich_clip"].tolist() == res.rich_clip.tolist()
        np.testing.assert_allclose(out["probs"].numpy(), res.probs, atol=1e-5)
        chosen += res.rich_clip.tolist()
        right += (res.probs.argmax(1) == labels[fold.test]).tolist()
        apex += [(int(s), int(s) + 14) for s in start[fold.test]]
        frames.append(np.tile(np.arange(105), (len(fold.test), 1)))
    right = np.array(right)  # a wrong class's map has no reason to point at the episode
    assert right.mean() > 0.8
    loc = localisation(np.concatenate(frames)[right], [a for a, r in zip(apex, right) if r], np.array(chosen)[right],
                       spans)
    assert loc["overlap"] == 100.0 and loc["strict"] >= 90.0 > loc["random_strict"] + 40, loc


def test_the_rich_clip_map_is_checked():
    assert any("rich_clip" in p for p in TrainHeadConfig(rich_clip="fused").check("train_head"))
    assert not TrainHeadConfig(rich_clip="head").check("train_head")
