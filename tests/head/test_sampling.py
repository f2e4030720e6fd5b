from __future__ import annotations

import pytest
import torch

from pipeline.config import TrainHeadConfig
from pipeline.head.sampling import ClipSampler


def sampler() -> ClipSampler:
    return ClipSampler.from_config(TrainHeadConfig(), 105)


def test_test_indices_are_the_papers():
    idx = sampler().test_indices()
    assert idx.shape == (7, 5)
    assert idx[0].tolist() == [15, 18, 21, 24, 27]
    assert idx[1].tolist() == [25, 28, 31, 34, 37]
    assert idx[6].tolist() == [75, 78, 81, 84, 87]


def test_train_indices_in_bounds_sorted_distinct_and_random():
    s = sampler()
    g = torch.Generator().manual_seed(0)
    idx = s.train_indices(4000, g)  # (B, n, K)
    assert idx.shape == (4000, 7, 5)
    assert idx.min() >= 0 and idx.max() <= 104
    assert (idx.diff(dim=-1) > 0).all()  # sorted and distinct inside each clip
    # One window start o per video with clip c inside [o + 10c, o + 10c + 15) and o in 0..29.
    rel = idx - (torch.arange(7) * 10).view(1, 7, 1)  # (B, n, K) positions relative to each clip's start
    o_low = (rel.amax(dim=-1) - 14).amax(dim=1)  # o must be >= this
    o_high = rel.amin(dim=-1).amin(dim=1)  # and <= this
    assert (o_low <= o_high).all() and (o_high >= 0).all() and (o_low <= 29).all()
    assert idx[:, 0, 0].min() == 0 and idx[:, 6, 4].max() == 29 + 60 + 14  # both ends of the offset range occur
    # reproducible from the generator's seed
    assert torch.equal(s.train_indices(8, torch.Generator().manual_seed(3)), s.train_indices(8, torch.Generator().manual_seed(3)))


def test_too_short_cache_is_an_error():
    with pytest.raises(ValueError, match="cache holds 80 frames"):
        ClipSampler.from_config(TrainHeadConfig(), 80)


def test_window_offsets_fixed_is_the_papers_one_window_and_all_every_training_start():
    fixed = ClipSampler.from_config(TrainHeadConfig(test_windows="fixed"), 105)
    assert fixed.window_offsets() == [15]
    every = ClipSampler.from_config(TrainHeadConfig(test_windows="all"), 105)
    offsets = every.window_offsets()
    assert offsets[0] == 15 and sorted(offsets) == list(range(30))  # the test_offset window first: its clips are kept
    assert every.test_indices(offset=0)[0].tolist() == [0, 3, 6, 9, 12]
    assert every.test_indices(offset=29)[6].tolist() == [89, 92, 95, 98, 101]
    assert torch.equal(every.test_indices(), fixed.test_indices())
