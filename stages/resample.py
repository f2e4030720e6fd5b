"""resample: choose `n_frames` (105) frame indices per video inside its face-present span.

Reads `faces.h5`; writes `frames.h5` with `frame_index [105]` (original frame numbers) in one group
per video id (under a temporary name, then renamed; faces.h5 stays detect's alone). Policies:

- `uniform` (default): 105 indices evenly spaced from the first to the last frame where the face
  is present; a span shorter than 105 repeats frames (nearest-neighbour interpolation).
- `clip` (the paper's "interpolation and clipping"): a span longer than 105 is clipped to its
  central 105 consecutive frames (the temporal resolution of the original is kept); a shorter one
  is interpolated as in `uniform`.

Frames inside the span where the face is absent (a gap longer than `detect.max_gap`) are never
chosen: each index is moved to the nearest present frame.
"""
from __future__ import annotations

import h5py
import numpy as np
from tqdm import tqdm

from pipeline.config import Config, ResampleConfig
from pipeline.errors import PipelineError, VideoError
from pipeline.io import Failure, atomic_path, read_manifest
from pipeline.layout import layout_for
from pipeline.runner import Outcome, run_stage
from pipeline.tracking import ABSENT

STAGE = "resample"


def choose_frames(flags: np.ndarray, cfg: ResampleConfig) -> np.ndarray:
    """`n_frames` original frame numbers inside the face-present span; raises VideoError(no_span)."""
    present = np.flatnonzero(flags != ABSENT)
    if present.size < cfg.min_span or present.size == 0:
        raise VideoError("no_span", f"face present in {present.size} frames (< resample.min_span={cfg.min_span})")
    first, last = int(present[0]), int(present[-1])
    length = last - first + 1
    if cfg.policy == "clip" and length >= cfg.n_frames:
        start = first + (length - cfg.n_frames) // 2
        idx = np.arange(start, start + cfg.n_frames)
    else:
        idx = np.rint(np.linspace(first, last, cfg.n_frames)).astype(np.int64)
    # Snap indices that fall into an unfilled gap to the nearest present frame.
    pos = np.clip(np.searchsorted(present, idx), 1, len(present) - 1) if len(present) > 1 else np.zeros_like(idx)
    left, right = present[np.maximum(pos - 1, 0)], present[pos]
    nearest = np.where(np.abs(idx - left) <= np.abs(right - idx), left, right)
    return np.where(flags[idx] != ABSENT, idx, nearest).astype(np.int64)


def run(cfg: Config, *, dataset: str, force: bool = False) -> dict:
    return run_stage(STAGE, cfg, dataset, force=force)


def work(cfg: Config, dataset: str, *, sig: str, force: bool = False) -> Outcome:
    lay = layout_for(cfg, dataset)
    if not lay.faces.exists():
        raise PipelineError(f"{lay.faces} not found: run `pipeline run detect --dataset {dataset}` first")
    rows = read_manifest(lay.manifest)
    failures, n_ok = [], 0
    with h5py.File(lay.faces, "r") as faces, atomic_path(lay.frames) as tmp, h5py.File(tmp, "w") as out:
        out.attrs["signature"] = sig
        out.attrs["policy"] = cfg.resample.policy
        for row in tqdm(rows, desc=f"resample {dataset}", unit="video", leave=False):
            if row.video_id not in faces:
                continue  # failed upstream: already in failures.csv
            try:
                idx = choose_frames(faces[row.video_id]["flags"][:], cfg.resample)
            except VideoError as err:
                failures.append(Failure(row.video_id, STAGE, err.kind, err.message))
                continue
            out.create_group(row.video_id).create_dataset("frame_index", data=idx)  # ids with `/` nest
            n_ok += 1
    summary = {"stage": STAGE, "dataset": dataset, "policy": cfg.resample.policy, "n_frames": cfg.resample.n_frames,
               "resampled": n_ok, "failed": len(failures), "frames": str(lay.frames)}
    return Outcome(summary, failures, replace_ids=[r.video_id for r in rows], n_items=len(rows))
