"""`read_frames` on a long video holds only the requested frames (numpy buffers are traced by tracemalloc)."""
from __future__ import annotations

import tracemalloc

import numpy as np

from pipeline.video import iter_frames, read_frames
from tests.reliability import media

FRAME_BYTES = 160 * 120 * 3


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_read_frames_keeps_only_the_wanted_frames(tmp_path):
    path = media.long_video(tmp_path / "long.mp4", n_frames=600)
    wanted = [3, 150, 151, 420, 599]
    got = {}
    peak = _peak(lambda: got.update(read_frames(path, wanted)))
    assert sorted(got) == wanted and got[599].shape == (120, 160, 3)
    assert peak < 12 * FRAME_BYTES, f"{peak / 2**20:.1f} MiB for {len(wanted)} frames"
    # The measurement sees decoded frames: keeping all 600 would have shown ~55 MiB.
    everything = _peak(lambda: list(iter_frames(path)))
    assert everything > 500 * FRAME_BYTES
    # The right frames, in order: frame k was written with grey level 7k mod 256.
    levels = [int(np.median(got[k][:5, :5])) for k in wanted]
    assert all(abs(level - (7 * k) % 256) <= 3 for level, k in zip(levels, wanted)), levels
