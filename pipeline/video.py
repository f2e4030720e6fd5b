"""Decoding videos and frame folders, sequentially, never trusting header counts (docs/reference.md §5).

A "video" is a file (decoded with OpenCV/FFmpeg, rotation metadata applied) or a folder of frames
read in natural order. Decoding is always sequential: seeking frame by frame is ~6x slower, and
for the 105 frames that extract needs we decode once and keep only those (memory stays flat).
`crop` selects the left or right half of each frame (MMI dual-view sessions).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from pipeline.errors import VideoError
from pipeline.frames import sorted_frames


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    """Frames actually decoded."""
    header_frames: int
    """What the container claims (may be wrong: no_face.mp4 says 98, decodes 95)."""
    fps: float
    width: int
    height: int
    """Of the decoded frames, after rotation and crop."""
    rotation: int
    """Rotation metadata in degrees (already applied to the frames)."""


def _crop(frame: np.ndarray, crop: str | None) -> np.ndarray:
    if crop is None:
        return frame
    half = frame.shape[1] // 2
    if crop == "left":
        return frame[:, :half]
    if crop == "right":
        return frame[:, half:]
    raise ValueError(f"crop must be left, right or None, got {crop!r}")


def _open(path: Path) -> cv2.VideoCapture:
    if not path.exists():
        raise VideoError("missing", f"file not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError("unreadable", "zero-byte file")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise VideoError("unreadable", f"FFmpeg cannot open {path.name} (not a video, or a damaged container)")
    # OpenCV applies the container's rotation by default; say so explicitly (docs/reference.md §5).
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return cap


def iter_frames(path: Path, crop: str | None = None) -> Iterator[np.ndarray]:
    """Yield every frame in order as RGB uint8 (H, W, 3)."""
    path = Path(path)
    if path.is_dir():
        files = sorted_frames(path)
        if not files:
            raise VideoError("empty", f"no image files in frame folder {path}")
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)  # grey images come back as 3 channels
            if img is None:
                raise VideoError("unreadable", f"cannot decode frame image {f.name}")
            yield _crop(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), crop)
        return
    cap = _open(path)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            yield _crop(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), crop)
    finally:
        cap.release()


def probe(path: Path, *, fps_default: float = 25.0, crop: str | None = None) -> VideoInfo:
    """Decode the whole video once (grab only) to count its frames; raise VideoError when none decode."""
    path = Path(path)
    if path.is_dir():
        files = sorted_frames(path) if path.exists() else []
        if not files:
            raise VideoError("empty", f"no image files in frame folder {path}")
        first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise VideoError("unreadable", f"cannot decode frame image {files[0].name}")
        first = _crop(first, crop)
        return VideoInfo(len(files), len(files), fps_default, first.shape[1], first.shape[0], 0)
    cap = _open(path)
    try:
        header = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360
        ok, frame = cap.read()
        if not ok:
            raise VideoError("empty", "no video frames could be decoded (audio-only, or damaged stream)")
        frame = _crop(frame, crop)
        n = 1
        while cap.grab():
            n += 1
    finally:
        cap.release()
    if not 0 < fps < 1000:
        fps = fps_default  # some containers (and variable-frame-rate files) report nonsense
    return VideoInfo(n, header, fps, frame.shape[1], frame.shape[0], rotation)


def read_frames(path: Path, indices: Iterable[int], crop: str | None = None) -> dict[int, np.ndarray]:
    """Decode sequentially up to the last wanted index, keeping only `indices` (RGB uint8).

    Memory holds at most the distinct wanted frames, whatever the video's length.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return {}
    path = Path(path)
    out: dict[int, np.ndarray] = {}
    if path.is_dir():
        files = sorted_frames(path)
        for i in wanted:
            if i >= len(files):
                break
            img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            if img is None:
                raise VideoError("unreadable", f"cannot decode frame image {files[i].name}")
            out[i] = _crop(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), crop)
    else:
        cap = _open(path)
        try:
            wanted_set, last, i = set(wanted), wanted[-1], 0
            while i <= last:
                if i in wanted_set:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    out[i] = _crop(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), crop)
                elif not cap.grab():  # grab() skips the colour conversion of unwanted frames
                    break
                i += 1
        finally:
            cap.release()
    missing = [i for i in wanted if i not in out]
    if missing:
        raise VideoError("short", f"frames {missing[:5]}... not decodable (video has fewer frames than recorded)")
    return out
