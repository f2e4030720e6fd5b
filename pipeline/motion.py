"""Motion features appended to a backbone's (`extract.motion`, issue 31 item 5).

`flow`: dense optical flow (Farnebäck, OpenCV) from a video's first chosen frame to each chosen frame,
on the aligned face in grey at 112 px, averaged on an 8x8 grid: 128 numbers a frame (dx, dy per cell,
in pixels of the 112-px face). It sees what expressions move (brows, lids, cheeks, lips) and is blind to
texture (skin, lighting, how a rig shades a face). Measured across rigs and
distractors as a linear probe, it holds better than the detector body alone (bench/results/descriptors.md);
the head's table with it: bench/results/robust.md.

`flow_hog`: the same flow and, after it, HOG of each aligned grey face (`hog_features`, 324 numbers a frame).
`hog`: the HOG alone, for held expressions, where a flow from the first frame has nothing to follow.
`flow_hog_fine`, `hog_fine`: the same with HOG of 14-px cells (1764 numbers a frame), which sees smaller edges
(a nose wrinkle, a lid fold) at 5.4x the width (bench/results/descriptors.md, seventeenth session).

Per video, not per frame: the reference is the video's own first frame, so the features depend on
which frames resample chose, as the rest of the cache does.
"""
from __future__ import annotations

import cv2
import numpy as np

SIZE, GRID = 112, 8
HOG_CELLS = {"none": 0, "flow": 0, "flow_hog": 28, "hog": 28, "flow_hog_fine": 14, "hog_fine": 14}
"""Each motion's HOG cell in px of the 112-px face (0: no HOG): 28 px is 4x4 cells, 324 numbers a frame; 14 px
is 8x8 cells, 1764 numbers. Blocks of 2x2 cells, 9 orientations."""
MOTIONS = tuple(HOG_CELLS)
HOG_BLOCK, HOG_BINS = 2, 9
# Farnebäck: pyramid scale 0.5, 3 levels, 15-px window, 3 iterations, 5-px polynomial (sigma 1.2): OpenCV's
# documented example values, which fit a 112-px face (a brow moves a few pixels).
_FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


def _has_flow(motion: str) -> bool:
    return motion.startswith("flow")


def motion_dim(motion: str) -> int:
    cell = HOG_CELLS[motion]
    hog = HOG_BINS * HOG_BLOCK ** 2 * (SIZE // cell - HOG_BLOCK + 1) ** 2 if cell else 0
    return 2 * GRID * GRID * _has_flow(motion) + hog


def motion_features(crops: np.ndarray, motion: str) -> np.ndarray:
    """(T, H, W, 3) uint8 aligned RGB crops of one video -> (T, motion_dim) float32."""
    if motion == "none":
        return np.zeros((len(crops), 0), np.float32)
    grey = _grey(crops)
    blocks = [pooled_flow(flow_fields(grey), GRID)] if _has_flow(motion) else []
    if HOG_CELLS[motion]:
        blocks.append(hog_features(grey, HOG_CELLS[motion]))
    return np.concatenate(blocks, axis=1)


def _grey(crops: np.ndarray) -> list[np.ndarray]:
    """(T, H, W, 3) aligned RGB crops -> grey faces at SIZE px."""
    return [cv2.cvtColor(cv2.resize(c, (SIZE, SIZE), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY) for c in crops]


def flow_fields(crops: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    """(T, H, W, 3) uint8 aligned RGB crops (or `_grey`'s faces) -> per frame the (SIZE, SIZE, 2) flow from the
    first frame."""
    grey = crops if isinstance(crops, list) else _grey(crops)
    return [cv2.calcOpticalFlowFarneback(grey[0], g, None, *_FARNEBACK) for g in grey]


def hog_features(grey: list[np.ndarray], cell: int = HOG_CELLS["hog"]) -> np.ndarray:
    """Grey SIZE-px faces -> (T, 324) float32 HOG of `cell`-px cells ((T, 1764) at 14 px; scikit-image, L2-Hys
    blocks): the face's edges (brows, lids, nose wrinkles, lip lines) where they are, which a global pool of the
    backbone loses. Beside the backbone and the flow it raised a linear probe's worst source by 5.5 points
    (bench/results/descriptors.md, twelfth session)."""
    from skimage.feature import hog

    return np.stack([hog(g, orientations=HOG_BINS, pixels_per_cell=(cell, cell),
                         cells_per_block=(HOG_BLOCK, HOG_BLOCK))
                     for g in grey]).astype(np.float32)


def pooled_flow(fields: list[np.ndarray], grid: int) -> np.ndarray:
    """Flow fields averaged on a grid x grid layout: (T, 2 * grid * grid) float32 (dx, dy per cell)."""
    return np.stack([cv2.resize(f, (grid, grid), interpolation=cv2.INTER_AREA).reshape(-1) for f in fields]
                    ).astype(np.float32)
