"""One video's face track: decode every frame, detect faces in batches, keep one subject's track.

The detect stage's per-video work (`stages/detect.py` adds resumable parts, faces.h5 and QC around it),
and `pipeline predict`'s for a single video."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import DetectConfig
from pipeline.detector import Detections, RetinaFaceDetector, build_detector, size_for_faces, smallest_face
from pipeline.errors import VideoError
from pipeline.io import ManifestRow
from pipeline.tracking import DETECTED, FaceTrack, build_track
from pipeline.video import iter_frames

_DETECTOR = None  # one per worker process, built on first use


@dataclass
class VideoResult:
    video_id: str
    track: FaceTrack | None
    n_frames: int
    width: int = 0
    height: int = 0
    kind: str = ""
    message: str = ""
    det_size: int = 0
    """Smallest detector input (long side) any batch of the video ran at (`detect.adaptive_min_face`)."""


def shared_detector(cfg: DetectConfig):
    """This process's detector for `cfg`, built on first use and kept (a worker detects many videos)."""
    global _DETECTOR
    if _DETECTOR is None or _DETECTOR[0] != cfg:
        _DETECTOR = (cfg, build_detector(cfg))
    return _DETECTOR[1]


def detect_video(row: ManifestRow, cfg: DetectConfig) -> VideoResult:
    """Stream the video in batches through the detector (every `stride`-th frame), then track.

    `adaptive_min_face`: a batch detected at det_size sets the input size of the next batches from its
    smallest face (`size_for_faces`); at a smaller size, frames with no face are detected again at
    det_size, and when that finds a face the size is chosen again from it."""
    detector = shared_detector(cfg)
    adaptive = cfg.adaptive_min_face > 0 and isinstance(detector, RetinaFaceDetector)
    dets: list[Detections | None] = []  # None: frame skipped by stride
    batch: list[np.ndarray] = []
    batch_idx: list[int] = []
    shape = (0, 0)
    size = cfg.det_size  # the first batch probes at full size
    sizes: list[int] = []  # input size of each batch, for the record

    def flush() -> None:
        nonlocal size
        found = detector.detect(batch, size) if adaptive else detector.detect(batch)
        sizes.append(size)
        if adaptive:
            h, w = batch[0].shape[:2]
            probe, empty = found, []
            if size != cfg.det_size:
                empty = [k for k, d in enumerate(found) if not len(d)]
                probe = detector.detect([batch[k] for k in empty], cfg.det_size) if empty else []
                for k, d in zip(empty, probe):
                    found[k] = d
            # Chosen again after every full-size look: no face there (a cut, a face turned away) means
            # full size until faces come back, so a faceless stretch costs no more than without this.
            if size == cfg.det_size or empty:
                size = size_for_faces(smallest_face(probe), h, w, cfg.det_size, cfg.adaptive_min_face)
        for i, d in zip(batch_idx, found):
            dets[i] = d
        batch.clear()
        batch_idx.clear()

    try:
        for i, frame in enumerate(iter_frames(Path(row.path), crop=row.crop_side)):
            dets.append(None)
            if i % cfg.stride:
                continue
            if batch and batch[0].shape != frame.shape:  # a stream that changes size: never mix sizes
                flush()
            shape = frame.shape[:2]
            batch.append(frame)
            batch_idx.append(i)
            if len(batch) == cfg.batch_size:
                flush()
        if batch:
            flush()
    except VideoError as err:
        return VideoResult(row.video_id, None, len(dets), kind=err.kind, message=err.message)
    if not dets:
        return VideoResult(row.video_id, None, 0, kind="empty", message="no frames decoded")
    h, w = shape
    track = build_track(dets, w, h, max_gap=max(cfg.max_gap, cfg.stride - 1), smooth_window=cfg.smooth_window,
                        max_jump=cfg.max_jump)
    if not (track.flags == DETECTED).any():
        return VideoResult(row.video_id, None, len(dets), w, h, "no_face", f"no face found in {len(dets)} frames")
    return VideoResult(row.video_id, track, len(dets), w, h, det_size=min(sizes, default=cfg.det_size))
