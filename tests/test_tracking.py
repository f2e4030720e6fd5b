"""One subject per video, on synthetic detections where the answer is known."""
from __future__ import annotations

import numpy as np

from pipeline.detector import Detections
from pipeline.tracking import ABSENT, DETECTED, FILLED, build_track


def _face(cx: float, cy: float, size: float, score: float = 0.99) -> tuple:
    box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], np.float32)
    pts = np.array([[cx - 0.2 * size, cy - 0.1 * size], [cx + 0.2 * size, cy - 0.1 * size], [cx, cy + 0.05 * size],
                    [cx - 0.15 * size, cy + 0.25 * size], [cx + 0.15 * size, cy + 0.25 * size]], np.float32)
    return box, pts, score


def _dets(*faces) -> Detections:
    if not faces:
        return Detections.empty()
    boxes, pts, scores = zip(*faces)
    return Detections(np.stack(boxes), np.array(scores, np.float32), np.stack(pts))


def test_keeps_the_subject_when_a_passer_by_crosses():
    frames = []
    for t in range(60):
        subject = _face(320 + 0.5 * t, 240, 160)
        passer = _face(40 + 9 * t, 260, 150)  # walks across the subject around t = 31
        frames.append(_dets(passer, subject) if t % 2 else _dets(subject, passer))
    track = build_track(frames, 640, 480, smooth_window=1)
    centre = (track.boxes[:, 0] + track.boxes[:, 2]) / 2
    assert (track.flags == DETECTED).all()
    np.testing.assert_allclose(centre, 320 + 0.5 * np.arange(60), atol=1e-3)


def test_fills_short_gaps_and_leaves_long_ones():
    frames = [_dets(_face(300, 200, 120)) for _ in range(100)]
    for t in range(20, 25):
        frames[t] = _dets()
    for t in range(50, 90):
        frames[t] = _dets()
    track = build_track(frames, 640, 480, max_gap=10, smooth_window=3)
    assert (track.flags[20:25] == FILLED).all()
    assert (track.flags[50:90] == ABSENT).all() and (track.boxes[50:90] == 0).all()
    assert track.span() == (0, 99)


def test_no_detection_gives_an_empty_track():
    track = build_track([_dets() for _ in range(10)], 640, 480)
    assert track.span() is None and (track.flags == ABSENT).all()
