"""Folds shared among processes: the numbers of all folds batched in one process (to float rounding: the
batched matmuls differ in size), and no worker recycled mid-run."""
from __future__ import annotations

import pytest

import os
import warnings

import numpy as np
import torch
from joblib import Parallel, delayed

from pipeline.config import TrainHeadConfig
from pipeline.head.train import cross_validate, make_folds


@pytest.mark.slow
def test_parallel_folds_equal_serial_and_survive_a_pool_left_by_another_stage():
    rng = np.random.default_rng(0)
    # MMI-sized (22 MB): with torch, a fold's worker grows past loky's 300 MB "leak" limit.
    feats = rng.standard_normal((205, 105, 512), dtype=np.float32).astype(np.float16)
    labels = rng.integers(0, 3, 205)
    subjects = [f"S{i % 4}" for i in range(205)]
    folds = make_folds(labels, subjects, k=4, seed=0)  # more folds than workers: jobs wait in the queue
    # What detect/manifest leave behind: an idle loky pool whose memory baseline predates torch.
    Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(4))
    runs = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for workers in (2, 1):
            cfg = TrainHeadConfig(folds=4, epochs=1, fold_workers=workers, threads=1, device="cpu")
            runs[workers] = cross_validate(cfg, feats, labels, folds, 3, device=torch.device("cpu"))
    assert not [w for w in caught if "worker stopped" in str(w.message)], [str(w.message) for w in caught]
    for par, ser in zip(runs[2], runs[1]):
        assert par.fold == ser.fold
        np.testing.assert_allclose(par.probs, ser.probs, rtol=1e-5, atol=1e-7)
        assert [e.test_war for e in par.history] == [e.test_war for e in ser.history]
        np.testing.assert_allclose([e.train_loss for e in par.history], [e.train_loss for e in ser.history], rtol=1e-5)
