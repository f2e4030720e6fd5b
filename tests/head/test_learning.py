"""A real learning test: the class lives in 5 consecutive frames at a random position, the rest is
noise. Averaging all 35 sampled frames dilutes it; the clip encoder + EIAN should find it."""
from __future__ import annotations

import pytest

import numpy as np

from cache.reader import load_cache
from pipeline.config import TrainHeadConfig
from pipeline.head.report import war_uar
from pipeline.head.train import cross_validate, make_folds
from tests.head.conftest import write_synthetic_dataset


@pytest.mark.slow
def test_full_head_beats_mean_pool_on_a_short_episode(tmp_path):
    write_synthetic_dataset(tmp_path, n_videos=120, n_subjects=30, dim=16, signal=1.5, signal_len=5, failed=())
    cache = load_cache(tmp_path / "synth" / "features")
    folds = make_folds(cache.label, cache.subject, k=3, seed=0)
    # A faster recipe than the paper's (lr 3e-3, 30 epochs) so the test stays a few seconds.
    cfg = TrainHeadConfig(epochs=30, hidden=32, lr=3e-3, batch_size=16, warmup_epochs=2, t_max=30, dropout=0.1,
                          threads=1, device="cpu", center="none", standardize=False,
                          fusion="none")  # the head itself, on the raw features
    acc = {}
    for kind in ("meanpool", "ceflnet"):
        results = cross_validate(cfg, cache.features, cache.label, folds, 3, kind=kind)
        acc[kind] = np.mean([war_uar(cache.label[r.test], r.pred)[0] for r in results])
    assert acc["ceflnet"] >= 85, acc
    assert acc["ceflnet"] >= acc["meanpool"] + 15, acc


@pytest.mark.slow  # trains the head on 120 videos (6 s)
def test_default_input_learns_the_expression_under_a_10x_identity_offset(tmp_path):
    """Frozen features are dominated by who is in the video: every subject gets a constant offset ten
    times the size of the expression, and the folds hold whole subjects out. The head's default input
    (TrainHeadConfig().center, the one a `folder` or `csv` dataset gets) must still learn the
    expression, not the people."""
    write_synthetic_dataset(tmp_path, n_videos=120, n_subjects=40, dim=16, signal=1.5, signal_len=5, failed=())
    cache = load_cache(tmp_path / "synth" / "features")
    rng = np.random.default_rng(1)
    signal = np.linalg.norm(1.5 * np.ones(16))  # the class prototypes' typical norm
    offsets = {s: rng.normal(size=16) / 4 * 10 * signal for s in np.unique(cache.subject)}  # norm ~10x
    feats = cache.features.astype(np.float32) + np.stack([offsets[s] for s in cache.subject])[:, None, :]
    assert np.median([np.linalg.norm(o) for o in offsets.values()]) > 8 * signal
    folds = make_folds(cache.label, cache.subject, k=3, seed=0)
    cfg = TrainHeadConfig(epochs=30, hidden=32, lr=3e-3, batch_size=16, warmup_epochs=2, t_max=30, dropout=0.1,
                          threads=1, device="cpu")
    from pipeline.head.inputs import per_video
    x = per_video(feats.astype(np.float16), cfg.center)
    results = cross_validate(cfg, x, cache.label, folds, 3, subjects=cache.subject)
    war = np.mean([war_uar(cache.label[r.test], r.pred)[0] for r in results])
    assert war >= 80, (cfg.center, war)


def test_inner_epoch_selection_never_touches_the_test_fold_and_stops_early(tmp_path, monkeypatch):
    """`epoch_select: inner` reads the epoch count off held-out *training* subjects only, then trains the
    fold for that many epochs; a held-out run stops `inner_patience` epochs after its best."""
    import pipeline.head.train as train

    write_synthetic_dataset(tmp_path, n_videos=120, n_subjects=24, dim=16, signal=1.5, signal_len=5, failed=())
    cache = load_cache(tmp_path / "synth" / "features")
    folds = make_folds(cache.label, cache.subject, k=3, seed=0)
    subjects = np.asarray(cache.subject)
    calls: list[list[tuple[np.ndarray, np.ndarray]]] = []
    real = train.train_group

    def spy(runs, *a, **kw):
        calls.append([(np.asarray(r.fold.train), np.asarray(r.fold.test)) for r in runs])
        return real(runs, *a, **kw)

    monkeypatch.setattr(train, "train_group", spy)
    cfg = TrainHeadConfig(epochs=40, hidden=32, lr=3e-3, batch_size=16, warmup_epochs=2, t_max=40, dropout=0.1,
                          threads=1, device="cpu", center="none", epoch_select="inner", inner_patience=15,
                          fold_workers=1)  # in this process, where the spy sees every run
    results = cross_validate(cfg, cache.features, cache.label, folds, 3, subjects=subjects)
    assert [len(c) for c in calls] == [len(folds), len(folds)]  # the held-out runs together, then the folds
    for fold, r, (held_train, held_out), (fold_train, fold_test) in zip(folds, results, *calls):
        test_subjects = set(subjects[fold.test])
        assert set(held_train) | set(held_out) == set(fold.train)  # the held-out run sees training rows only
        assert not set(subjects[held_out]) & set(subjects[held_train])  # subject-independent
        assert not set(subjects[held_out]) & test_subjects and not set(subjects[held_train]) & test_subjects
        assert set(fold_train) == set(fold.train) and set(fold_test) == set(fold.test)
        chosen = train.best_held_out_epoch(r.held_out, first=cfg.warmup_epochs)
        assert len(r.history) == chosen <= cfg.epochs  # the fold trained exactly the chosen count
        assert len(r.held_out) <= chosen + cfg.inner_patience
    assert np.mean([war_uar(cache.label[r.test], r.pred)[0] for r in results]) >= 70


def test_inner_split_falls_back_without_two_subjects():
    from pipeline.head.train import inner_split

    labels = np.array([0, 1, 0, 1])
    assert inner_split(labels, np.array(["a"] * 4), np.arange(4), 5, 0) is None
    split = inner_split(labels, np.array(["a", "a", "b", "b"]), np.arange(4), 5, 0)
    assert split is not None and {*split.train} | {*split.test} == {0, 1, 2, 3}


@pytest.mark.parametrize("workers", [1, 2])  # in this process, and re-raised from the fold processes
def test_a_fold_whose_loss_stops_being_a_number_stops_the_run_with_the_cause(tmp_path, workers):
    """Measured with lr 1e-3 on flow features: a fold's loss turned NaN mid-run and the head then answered one
    class to the end, reported as a chance-level result. Here one training video's frames are not numbers."""
    from pipeline.errors import PipelineError

    write_synthetic_dataset(tmp_path, n_videos=24, n_subjects=6, dim=8, failed=())
    cache = load_cache(tmp_path / "synth" / "features")
    folds = make_folds(cache.label, cache.subject, k=2, seed=0)
    feats = cache.features.astype(np.float32)
    feats[folds[0].train[0], :, 0] = np.nan
    cfg = TrainHeadConfig(epochs=3, hidden=8, batch_size=4, threads=1, device="cpu", fold_workers=workers,
                          center="none", warmup_epochs=1)
    with pytest.raises(PipelineError, match=r"fold 0's training loss became nan at epoch 1 \(train_head.lr=0.0001"):
        cross_validate(cfg, feats, cache.label, folds, 3)
