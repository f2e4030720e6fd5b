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
from tqdm import tqdm

from pipeline.config import Config
from pipeline.errors import PipelineError, VideoError
from pipeline.io import Failure, atomic_path, read_manifest
from pipeline.layout import layout_for
from pipeline.resampling import choose_frames
from pipeline.runner import Outcome


def work(cfg: Config, dataset: str, *, sig: str, force: bool = False) -> Outcome:
    lay = layout_for(cfg, dataset)
    if not lay.faces.exists():
        raise PipelineError(f"{lay.faces} not found: run `pipeline run detect --dataset {dataset}` first")
    rows = read_manifest(lay.manifest)
    failures, n_ok = [], 0
    with h5py.File(lay.faces, "r") as faces, atomic_path(lay.frames) as tmp, h5py.File(tmp, "w") as out:
        out.attrs["policy"] = cfg.resample.policy
        for row in tqdm(rows, desc=f"resample {dataset}", unit="video", leave=False):
            if row.video_id not in faces:
                continue  # failed upstream: already in failures.csv
            try:
                idx = choose_frames(faces[row.video_id]["flags"][:], cfg.resample)
            except VideoError as err:
                failures.append(Failure(row.video_id, "resample", err.kind, err.message))
                continue
            out.create_group(row.video_id).create_dataset("frame_index", data=idx)  # ids with `/` nest
            n_ok += 1
    summary = {"stage": "resample", "dataset": dataset, "policy": cfg.resample.policy, "n_frames": cfg.resample.n_frames,
               "resampled": n_ok, "failed": len(failures), "frames": str(lay.frames)}
    return Outcome(summary, failures, replace_ids=[r.video_id for r in rows], n_items=len(rows))
