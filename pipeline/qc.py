"""Quality-control pictures: what a person checks by eye before trusting a cache."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pipeline.align import align
from pipeline.io import ManifestRow, atomic_path
from pipeline.video import read_frames

TILE = 160
COLOURS = [(255, 64, 64), (64, 255, 64), (64, 128, 255), (255, 255, 64), (255, 64, 255)]


def draw_face(frame: np.ndarray, box: np.ndarray, pts: np.ndarray, flag: int) -> np.ndarray:
    img = frame.copy()
    colour = (0, 220, 0) if flag == 1 else (255, 160, 0)  # green detected, orange interpolated
    th = max(1, round(max(img.shape[:2]) / 300))
    cv2.rectangle(img, tuple(int(v) for v in box[:2]), tuple(int(v) for v in box[2:]), colour, th)
    for (x, y), c in zip(pts, COLOURS):
        cv2.circle(img, (int(x), int(y)), 2 * th, c, -1)
    return img


def _fit(img: np.ndarray, size: int = TILE) -> np.ndarray:
    h, w = img.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 32, np.uint8)
    out[(size - small.shape[0]) // 2:][:small.shape[0], (size - small.shape[1]) // 2:][:, :small.shape[1]] = small
    return out


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    cv2.putText(tile, text[:26], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def detect_contact_sheet(rows: Sequence[ManifestRow], results: Sequence, out: Path, n_videos: int,
                         frames_per_video: int = 4, size: int = 224, margin: float = 0.0) -> Path | None:
    """Per sampled video, one row: frames with box and landmarks, each followed by its aligned crop."""
    if not results or n_videos == 0:
        return None
    by_id = {r.video_id: r for r in rows}
    pick = np.linspace(0, len(results) - 1, min(n_videos, len(results))).round().astype(int)
    lines = []
    for k in sorted(set(pick.tolist())):
        res = results[k]
        row, tr = by_id[res.video_id], res.track
        present = np.flatnonzero(tr.flags > 0)
        idx = present[np.linspace(0, len(present) - 1, frames_per_video).round().astype(int)]
        frames = read_frames(Path(row.path), idx, crop=row.crop_side)
        tiles = []
        for i in idx:
            f = frames[int(i)]
            tiles.append(_label(_fit(draw_face(f, tr.boxes[i], tr.landmarks[i], tr.flags[i])), f"{res.video_id} #{i}"))
            tiles.append(_fit(align(f, tr.landmarks[i], size, margin)))
        lines.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(lines, axis=0)
    with atomic_path(out) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        tmp.write_bytes(buf.tobytes())
    return out
