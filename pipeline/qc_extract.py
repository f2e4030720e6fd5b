"""The extract stage's QC picture: the chosen frames as the cache holds them, and the face mesh on them.

Apart from `pipeline.qc` so that detect, which draws its own sheet, does not depend on the mesh's code: an edit of the
mesh must not make a dataset's faces detected again."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pipeline.align import align
from pipeline.errors import VideoError
from pipeline.motion import mesh_crops
from pipeline.io import atomic_path
from pipeline.qc import TILE, _fit, _label
from pipeline.video import read_frames


def extract_contact_sheet(tasks: Sequence, out: Path, n_videos: int, motion: str, size: int, margin: float,
                          frames_per_video: int = 4) -> Path:
    """What the cache holds, per sampled video one row: chosen frames as the backbone saw them (the aligned crop)
    and, when `motion` has the face mesh, the mesh's crop with its 468 points and face probability beside each.
    `tasks`: the extract stage's `VideoTask`s (video id, path, chosen frame numbers, their 5 landmarks). Always
    written, a tile saying so when no video is drawn (`detect.qc_samples: 0`): it is one of the stage's outputs."""
    n = min(n_videos, len(tasks))
    picks = sorted(set(np.linspace(0, len(tasks) - 1, n).round().astype(int).tolist())) if n else []
    lines = []
    for k in picks:
        t = tasks[k]
        at = np.linspace(0, len(t.frame_index) - 1, frames_per_video).round().astype(int)  # of the chosen frames
        chosen, lms = t.frame_index[at], t.landmarks[at]
        try:
            decoded = read_frames(Path(t.path), chosen, crop=t.crop)
        except VideoError:
            continue  # the stage has recorded why in failures.csv
        frames = [decoded[int(i)] for i in chosen]
        tiles = [_label(_fit(align(f, lm, size, margin)), f"{t.video_id} #{int(i)}")
                 for f, lm, i in zip(frames, lms, chosen)]
        meshes = mesh_crops(decoded, chosen, lms, motion)  # None without the mesh
        if meshes is not None:
            tiles = [x for pair in zip(tiles, mesh_tiles(meshes)) for x in pair]
        lines.append(np.concatenate(tiles, axis=1))
    if not lines:
        lines = [_label(np.full((TILE, 2 * TILE, 3), 32, np.uint8), "no video sampled")]
    png = cv2.imencode(".png", cv2.cvtColor(np.concatenate(lines, axis=0), cv2.COLOR_RGB2BGR))[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(png.tobytes())
    return out


def mesh_tiles(crops: np.ndarray) -> list[np.ndarray]:
    """(N, 192, 192, 3) `motion.mesh_crops` -> one tile each, the mesh's points and face probability on it."""
    from pipeline.facemesh import mesh_and_scores

    points, scores = mesh_and_scores(crops)  # square crops: _fit only scales them
    # 1-px dots drawn at tile size (drawn on the crop, a downscale would blur them away)
    return [_label(draw_mesh(_fit(c), p * (TILE / c.shape[0]), float(s)), f"mesh p={float(s):.2f}")
            for c, p, s in zip(crops, points, scores)]


def draw_mesh(crop: np.ndarray, points: np.ndarray, score: float) -> np.ndarray:
    """The face mesh's points on its crop: green where the network still sees a face (probability >= 0.5), red
    where it does not (its points are then a guess, and so are the `*_mesh` features of that frame)."""
    img = crop.copy()
    colour = (0, 220, 0) if score >= 0.5 else (255, 48, 48)
    for x, y in np.asarray(points)[:, :2].round().astype(int):
        if 0 <= x < img.shape[1] and 0 <= y < img.shape[0]:
            img[y, x] = colour
    return img
