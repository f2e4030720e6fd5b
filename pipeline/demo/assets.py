"""The real face photos the demo is generated from, and how they were cut from their sources.

The images ship in `pipeline/assets/faces/` (provenance and licences in its README.md). This module
loads them and, as an explicit maintenance step, recreates them from the shared test videos:

    python -m pipeline.demo.assets /work/shared/testdata/videos

Each image is a square crop around the RetinaFace box (side = `CONTEXT` x the box's longer side,
clipped to the frame), resized to `ASSET_SIZE`, saved as JPEG.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FACES_DIR = Path(__file__).resolve().parent.parent / "assets" / "faces"
ASSET_SIZE = 320
CONTEXT = 2.2
JPEG_QUALITY = 90


@dataclass(frozen=True)
class FaceSource:
    """One shipped face image: which identity, cut from which frame of which source."""

    identity: str
    file: str
    source: str
    """`skimage:astronaut`, or a video file name under the test-data folder."""
    frame: int
    pick: str = "largest"
    """Which detected face to keep: `largest` (the only one used so far)."""


# Frames chosen by looking at them: calm faces, no hand over the mouth (see the assets README).
SOURCES = (
    FaceSource("astronaut", "astronaut.jpg", "skimage:astronaut", 0),
    FaceSource("pyfeat", "pyfeat_f005.jpg", "single_face.mp4", 5),
    FaceSource("pyfeat", "pyfeat_f012.jpg", "single_face.mp4", 12),
    FaceSource("pexels", "pexels_f240.jpg", "WolfgangLanger_Pexels.mp4", 240),
    FaceSource("pexels", "pexels_f244.jpg", "WolfgangLanger_Pexels.mp4", 244),
    FaceSource("flickr", "flickr_f050.jpg", "video_01.mp4", 50),
)


def identities() -> tuple[str, ...]:
    """Identity names in a fixed order (the order of `SOURCES`)."""
    return tuple(dict.fromkeys(s.identity for s in SOURCES))


def load_faces(faces_dir: Path = FACES_DIR) -> dict[str, list[np.ndarray]]:
    """identity → its shipped BGR images (uint8, ASSET_SIZE square), in `SOURCES` order."""
    out: dict[str, list[np.ndarray]] = {}
    for src in SOURCES:
        path = Path(faces_dir) / src.file
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"demo face asset {path} is missing or unreadable")
        out.setdefault(src.identity, []).append(image)
    return out


# ------------------------------------------------------------------ recreating the assets


def _read_frame(video: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    try:
        for i in range(index + 1):  # decode in order: seeking is frame-inexact on some files
            ok, frame = cap.read()
            if not ok:
                raise ValueError(f"{video} has only {i} decodable frames, wanted frame {index}")
    finally:
        cap.release()
    return frame


def crop_face(image_bgr: np.ndarray, *, size: int = ASSET_SIZE, context: float = CONTEXT) -> np.ndarray:
    """Square crop around the largest RetinaFace detection, resized to `size`."""
    from retinaface import detect_faces

    faces = detect_faces(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    if not faces:
        raise ValueError("no face detected in the source frame")
    f = max(faces, key=lambda d: d.width * d.height)
    h, w = image_bgr.shape[:2]
    side = int(min(context * max(f.width, f.height), h, w))
    cx, cy = f.x + f.width / 2, f.y + f.height / 2
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    crop = image_bgr[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def make_assets(videos_dir: Path, out_dir: Path = FACES_DIR) -> list[Path]:
    """Recreate every shipped image from its source; returns the written paths."""
    written = []
    for src in SOURCES:
        if src.source == "skimage:astronaut":
            import skimage.data

            frame = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
        else:
            frame = _read_frame(Path(videos_dir) / src.source, src.frame)
        path = Path(out_dir) / src.file
        cv2.imwrite(str(path), crop_face(frame), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="Recreate the demo's face images from the test videos.")
    parser.add_argument("videos_dir", type=Path, help="folder holding single_face.mp4, video_01.mp4, ...")
    parser.add_argument("--out", type=Path, default=FACES_DIR)
    args = parser.parse_args()
    for path in make_assets(args.videos_dir, args.out):
        print(path, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
