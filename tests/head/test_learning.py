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
                          threads=1, device="cpu")
    acc = {}
    for kind in ("meanpool", "ceflnet"):
        results = cross_validate(cfg, cache.features, cache.label, folds, 3, kind=kind)
        acc[kind] = np.mean([war_uar(cache.label[r.test], r.pred)[0] for r in results])
    assert acc["ceflnet"] >= 85, acc
    assert acc["ceflnet"] >= acc["meanpool"] + 15, acc
