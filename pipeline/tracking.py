"""One subject per video: seed on the best face, follow it, fill short gaps, smooth.

The seed is the detection that is largest, most central and most confident (the subject of an
expression video faces the camera). From the seed frame the track is followed forwards and
backwards: a detection joins only if it overlaps the last kept box or its landmarks lie close to
the last kept landmarks (relative to face size). Nothing else may join, so the track never hops
to another person; frames with no acceptable detection stay absent and short gaps are filled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.ndimage import uniform_filter1d

from pipeline.detector import Detections

ABSENT, DETECTED, FILLED = 0, 1, 2


@dataclass
class FaceTrack:
    """Per-frame face of the subject; rows with flag ABSENT hold zeros."""

    boxes: np.ndarray  # (T, 4) float32 x1, y1, x2, y2, original pixels
    landmarks: np.ndarray  # (T, 5, 2) float32
    scores: np.ndarray  # (T,) float32; 0 for absent and filled frames
    flags: np.ndarray  # (T,) uint8: 0 absent, 1 detected, 2 filled by interpolation

    @property
    def n_frames(self) -> int:
        return len(self.flags)

    def span(self) -> tuple[int, int] | None:
        """First and last frame where the face is present (detected or filled), inclusive."""
        present = np.flatnonzero(self.flags != ABSENT)
        return (int(present[0]), int(present[-1])) if present.size else None


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box `a` (4,) with boxes `b` (K, 4)."""
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-9)


def seed_score(det: Detections, width: int, height: int) -> np.ndarray:
    """Largest × most central × most confident, each in [0, 1]."""
    size = np.sqrt((det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1]))
    size = size / max(width, height)
    centre = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
    off = np.linalg.norm((centre - [width / 2, height / 2]) / [width / 2, height / 2], axis=1) / np.sqrt(2)
    return size * (1.0 - 0.5 * off) * det.scores


def _match(prev_box: np.ndarray, prev_pts: np.ndarray, det: Detections, max_jump: float) -> int | None:
    """Index of the detection that continues the track, or None.

    Cost = landmark displacement relative to the face size; accepted when below `max_jump` or when
    the boxes overlap well (IoU ≥ 0.5). Among several, the smallest cost wins.
    """
    if len(det) == 0:
        return None
    scale = max(prev_box[2] - prev_box[0], prev_box[3] - prev_box[1], 1.0)
    dist = np.linalg.norm(det.landmarks - prev_pts[None], axis=2).mean(axis=1) / scale
    ok = (dist < max_jump) | (iou(prev_box, det.boxes) >= 0.5)
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmin(dist[ok])])


def build_track(dets: Sequence[Detections | None], width: int, height: int, *, max_gap: int = 30,
                smooth_window: int = 5, max_jump: float = 0.5) -> FaceTrack:
    """Per-frame detections (None for frames skipped by `stride`) → the subject's FaceTrack."""
    t = len(dets)
    track = FaceTrack(np.zeros((t, 4), np.float32), np.zeros((t, 5, 2), np.float32),
                      np.zeros(t, np.float32), np.zeros(t, np.uint8))
    best = [(float(seed_score(d, width, height).max()), i) for i, d in enumerate(dets) if d is not None and len(d)]
    if not best:
        return track
    _, seed_frame = max(best)
    d0 = dets[seed_frame]
    k0 = int(np.argmax(seed_score(d0, width, height)))
    _set(track, seed_frame, d0, k0)
    for direction in (1, -1):
        box, pts, last = d0.boxes[k0], d0.landmarks[k0], seed_frame
        i = seed_frame + direction
        while 0 <= i < t:
            d = dets[i]
            if d is not None:
                k = _match(box, pts, d, max_jump)
                if k is not None:
                    _set(track, i, d, k)
                    box, pts, last = d.boxes[k], d.landmarks[k], i
                elif abs(i - last) > max_gap * 4:
                    break  # lost for good: a person leaving the shot does not come back as someone else
            i += direction
    _fill(track, max_gap)
    _smooth(track, smooth_window)
    return track


def _set(track: FaceTrack, i: int, det: Detections, k: int) -> None:
    track.boxes[i], track.landmarks[i], track.scores[i] = det.boxes[k], det.landmarks[k], det.scores[k]
    track.flags[i] = DETECTED


def _fill(track: FaceTrack, max_gap: int) -> None:
    """Linear interpolation across gaps of at most `max_gap` frames between two detected frames."""
    known = np.flatnonzero(track.flags == DETECTED)
    for a, b in zip(known[:-1], known[1:]):
        if 1 < b - a <= max_gap + 1:
            w = ((np.arange(a + 1, b) - a) / (b - a)).astype(np.float32)
            track.boxes[a + 1:b] = (1 - w)[:, None] * track.boxes[a] + w[:, None] * track.boxes[b]
            track.landmarks[a + 1:b] = ((1 - w)[:, None, None] * track.landmarks[a]
                                        + w[:, None, None] * track.landmarks[b])
            track.flags[a + 1:b] = FILLED


def _segments(present: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], present.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _smooth(track: FaceTrack, window: int) -> None:
    """Centred moving average within each contiguous present segment (never across absences)."""
    if window <= 1:
        return
    for a, b in _segments(track.flags != ABSENT):
        if b - a > 1:
            track.boxes[a:b] = uniform_filter1d(track.boxes[a:b], window, axis=0, mode="nearest")
            track.landmarks[a:b] = uniform_filter1d(track.landmarks[a:b], window, axis=0, mode="nearest")
