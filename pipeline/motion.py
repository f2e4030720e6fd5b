"""Motion features appended to a backbone's (`extract.motion`, issue 31 item 5).

`flow`: dense optical flow (Farnebäck, OpenCV) from a video's first chosen frame to each chosen frame,
on the aligned face in grey at 112 px, averaged on an 8x8 grid: 128 numbers a frame (dx, dy per cell,
in pixels of the 112-px face). It sees what expressions move (brows, lids, cheeks, lips) and is blind to
texture (skin, lighting, how a rig shades a face). Measured across rigs and
distractors as a linear probe, it holds better than the detector body alone (bench/results/descriptors.md);
the head's table with it: bench/results/robust.md.

Per video, not per frame: the reference is the video's own first frame, so the features depend on
which frames resample chose, as the rest of the cache does.
"""
from __future__ import annotations

import cv2
import numpy as np

MOTIONS = ("none", "flow")
SIZE, GRID = 112, 8
# Farnebäck: pyramid scale 0.5, 3 levels, 15-px window, 3 iterations, 5-px polynomial (sigma 1.2): OpenCV's
# documented example values, which fit a 112-px face (a brow moves a few pixels).
_FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


def motion_dim(motion: str) -> int:
    return {"none": 0, "flow": 2 * GRID * GRID}[motion]


def motion_features(crops: np.ndarray, motion: str) -> np.ndarray:
    """(T, H, W, 3) uint8 aligned RGB crops of one video -> (T, motion_dim) float32."""
    if motion == "none":
        return np.zeros((len(crops), 0), np.float32)
    return pooled_flow(flow_fields(crops), GRID)


def flow_fields(crops: np.ndarray) -> list[np.ndarray]:
    """(T, H, W, 3) uint8 aligned RGB crops -> per frame the (SIZE, SIZE, 2) flow from the first frame."""
    grey = [cv2.cvtColor(cv2.resize(c, (SIZE, SIZE), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY) for c in crops]
    return [cv2.calcOpticalFlowFarneback(grey[0], g, None, *_FARNEBACK) for g in grey]


def pooled_flow(fields: list[np.ndarray], grid: int) -> np.ndarray:
    """Flow fields averaged on a grid x grid layout: (T, 2 * grid * grid) float32 (dx, dy per cell)."""
    return np.stack([cv2.resize(f, (grid, grid), interpolation=cv2.INTER_AREA).reshape(-1) for f in fields]
                    ).astype(np.float32)
