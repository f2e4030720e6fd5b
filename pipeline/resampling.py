"""Which frames of a video to keep: `resample.n_frames` indices inside its face-present span.

The resample stage's per-video choice (`stages/resample.py` writes frames.h5 around it), and
`pipeline predict`'s for a single video; the policies are described in `stages/resample.py`."""
from __future__ import annotations

import numpy as np

from pipeline.config import ResampleConfig
from pipeline.errors import VideoError
from pipeline.tracking import ABSENT


def choose_frames(flags: np.ndarray, cfg: ResampleConfig) -> np.ndarray:
    """`n_frames` original frame numbers inside the face-present span; raises VideoError(no_span)."""
    present = np.flatnonzero(flags != ABSENT)
    if present.size < cfg.min_span or present.size == 0:
        raise VideoError("no_span", f"face present in {present.size} frames (< resample.min_span={cfg.min_span})")
    first, last = int(present[0]), int(present[-1])
    length = last - first + 1
    if cfg.policy == "clip" and length >= cfg.n_frames:
        start = first + (length - cfg.n_frames) // 2
        idx = np.arange(start, start + cfg.n_frames)
    else:
        idx = np.rint(np.linspace(first, last, cfg.n_frames)).astype(np.int64)
    # Snap indices that fall into an unfilled gap to the nearest present frame.
    pos = np.clip(np.searchsorted(present, idx), 1, len(present) - 1) if len(present) > 1 else np.zeros_like(idx)
    left, right = present[np.maximum(pos - 1, 0)], present[pos]
    nearest = np.where(np.abs(idx - left) <= np.abs(right - idx), left, right)
    return np.where(flags[idx] != ABSENT, idx, nearest).astype(np.int64)
