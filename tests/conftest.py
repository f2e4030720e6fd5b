"""Shared fixtures: real videos from tests/data/videos (provenance in tests/data/PROVENANCE.md)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

VIDEOS = Path(__file__).parent / "data" / "videos"


def write_params(folder: Path, datasets: dict, dataset: str, **sections) -> Path:
    """A params.yaml for tests: tiny, fast settings on top of the defaults."""
    raw = {"dataset": dataset, "data_root": str(folder / "data"), "results_root": str(folder / "results"),
           "datasets": datasets, **sections}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def decode(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """The frames of a video (its first `limit`), BGR, as OpenCV reads them: the tests' own decoder,
    apart from `pipeline.video` (the code under test)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


EXTRACTED = ("features", "extract.json")
"""What extract writes into a dataset folder: left out of a copy a test extracts again."""


def copy_dataset(src: Path, dst_root: Path, *, without: tuple[str, ...] = ()) -> Path:
    """A copy of a dataset folder under another data root, leaving out some outputs: a test then writes
    only into its own folder, never into a session fixture's that other tests read."""
    dst = dst_root / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*without))
    return dst


def cut_clip(src: Path, dst: Path, n_frames: int) -> Path:
    """The first `n_frames` of a real video, re-encoded (a short real clip)."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    out = None
    for _ in range(n_frames):
        ok, frame = cap.read()
        if not ok:
            break
        if out is None:
            out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
        out.write(frame)
    out.release()
    cap.release()
    return dst


FAST = {"detect": {"det_size": 480, "batch_size": 16, "qc_samples": 2},
        "extract": {"weights": "random", "batch_size": 32, "shard_size": 2, "workers": 0}}


@pytest.fixture(scope="session")
def face_dataset(tmp_path_factory) -> dict:
    """A folder dataset of the real clips plus broken files; manifest → detect → resample run once."""
    from pipeline.config import load_config
    from pipeline.registry import stage

    base = tmp_path_factory.mktemp("faces")
    root = base / "videos"
    for label, name in [("happiness", "single_face.mp4"), ("neutral", "no_face.mp4"),
                        ("surprise", "face_noface.mov"), ("happiness", "video_01.mp4")]:
        (root / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(VIDEOS / name, root / label / name)
    cut_clip(VIDEOS / "single_face.mp4", root / "sadness" / "a" / "clip.mp4", 24)
    cut_clip(VIDEOS / "single_face.mp4", root / "sadness" / "b" / "clip.mp4", 30)
    (root / "neutral" / "empty.mp4").write_bytes(b"")
    (root / "neutral" / "notes.mp4").write_text("this is a text file, not a video\n")
    params = write_params(base, {"faces": {"adapter": "folder", "root": str(root)}}, "faces", **FAST)
    cfg = load_config(params)
    summaries = {name: stage(name).run(cfg, dataset="faces") for name in ("manifest", "detect", "resample")}
    return {"base": base, "root": root, "params": params, "cfg": cfg, "summaries": summaries,
            "dir": cfg.dataset_dir("faces")}
