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

`flow_hog_mesh`, `hog_fine_mesh`, `mesh`: the same with, last, the face's shape: MediaPipe's 468-point face mesh
(pipeline/facemesh.py, a torch port of its landmark network) on a looser crop of the same frame, each frame's points
put in a pose- and scale-free frame (`canonical_mesh`), 936 numbers a frame. Where an expression moves the face
(a jaw drop, lip corners, brows) the mesh says where each point went, which HOG cells and a flow grid only sample
(bench/results/robust_mesh.md, nineteenth session).

Per video, not per frame: the reference is the video's own first frame, so the features depend on
which frames resample chose, as the rest of the cache does.
"""
from __future__ import annotations

import cv2
import numpy as np

SIZE, GRID = 112, 8
HOG_CELLS = {"none": 0, "flow": 0, "flow_hog": 28, "hog": 28, "flow_hog_fine": 14, "hog_fine": 14,
             "flow_hog_mesh": 28, "hog_fine_mesh": 14, "mesh": 0}
"""Each motion's HOG cell in px of the 112-px face (0: no HOG): 28 px is 4x4 cells, 324 numbers a frame; 14 px
is 8x8 cells, 1764 numbers. Blocks of 2x2 cells, 9 orientations."""
MOTIONS = tuple(HOG_CELLS)
MESH_POINTS = 468
# Mesh points that an expression barely moves (eye corners, the nose's bridge and tip, forehead, temples, cheek
# contour): their centroid, spread and eye line fix each frame's position, scale and roll (`canonical_mesh`), so what
# is left is the shape. The mouth, brows and jaw are left out on purpose: they are what expressions move.
STABLE = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 10, 151, 9, 8, 127, 356, 234, 454)
RIGHT_EYE, LEFT_EYE = (33, 133), (362, 263)  # the person's right eye is on the image's left
HOG_BLOCK, HOG_BINS = 2, 9
# Farnebäck: pyramid scale 0.5, 3 levels, 15-px window, 3 iterations, 5-px polynomial (sigma 1.2): OpenCV's
# documented example values, which fit a 112-px face (a brow moves a few pixels).
_FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


def _has_flow(motion: str) -> bool:
    return motion.startswith("flow")


def has_mesh(motion: str) -> bool:
    """Whether the motion needs `pipeline.facemesh.mesh_crop`s of the frames beside the aligned crops."""
    return motion.endswith("mesh")


def motion_dim(motion: str) -> int:
    cell = HOG_CELLS[motion]
    hog = HOG_BINS * HOG_BLOCK ** 2 * (SIZE // cell - HOG_BLOCK + 1) ** 2 if cell else 0
    return 2 * GRID * GRID * _has_flow(motion) + hog + 2 * MESH_POINTS * has_mesh(motion)


def motion_features(crops: np.ndarray, motion: str, mesh_crops: np.ndarray | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 aligned RGB crops of one video -> (T, motion_dim) float32; a `*mesh` motion also takes
    the same frames' (T, 192, 192, 3) `mesh_crop`s."""
    if motion == "none":
        return np.zeros((len(crops), 0), np.float32)
    grey = _grey(crops) if _has_flow(motion) or HOG_CELLS[motion] else []
    blocks = [pooled_flow(flow_fields(grey), GRID)] if _has_flow(motion) else []
    if HOG_CELLS[motion]:
        blocks.append(hog_features(grey, HOG_CELLS[motion]))
    if has_mesh(motion):
        if mesh_crops is None or len(mesh_crops) != len(crops):
            raise ValueError(f"extract.motion {motion!r} needs one mesh crop per aligned crop")
        from pipeline.facemesh import mesh_landmarks

        blocks.append(canonical_mesh(mesh_landmarks(mesh_crops)[..., :2]).reshape(len(crops), -1))
    return np.concatenate(blocks, axis=1)


def mesh_crops(frames: dict | list | np.ndarray, frame_index, landmarks, motion: str) -> np.ndarray | None:
    """The `pipeline.facemesh.mesh_crop` of each chosen frame (`frames[i]` for i in `frame_index`, with its 5
    landmarks) when `motion` has the mesh, else None: what `motion_features` takes beside the aligned crops."""
    if not has_mesh(motion):
        return None
    from pipeline.facemesh import mesh_crop

    return np.stack([mesh_crop(frames[int(i)], lm) for i, lm in zip(frame_index, landmarks)])


def canonical_mesh(points: np.ndarray) -> np.ndarray:
    """(T, 468, 2) mesh points in any frame's pixels -> the same shapes with the `STABLE` points' centroid at 0, their
    root-mean-square distance from it 1 and the eye line level: float32, the same numbers whatever the face's size,
    place and roll in the picture."""
    pts = np.asarray(points, np.float64)
    stable = pts[:, STABLE]
    centre = stable.mean(axis=1, keepdims=True)
    spread = np.sqrt(((stable - centre) ** 2).sum(-1).mean(-1))[:, None, None]
    eyes = pts[:, LEFT_EYE].mean(1) - pts[:, RIGHT_EYE].mean(1)
    angle = np.arctan2(eyes[:, 1], eyes[:, 0])
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    q = (pts - centre) / np.maximum(spread, 1e-9)
    # rotate by -angle: the eye line becomes the x axis
    return np.stack([cos * q[..., 0] + sin * q[..., 1], -sin * q[..., 0] + cos * q[..., 1]], -1).astype(np.float32)


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
