"""detect: decode every frame, detect faces in batches, keep one subject's track per video.

Reads `manifest.csv`; writes `faces.h5` (one group per video id: boxes, landmarks, scores, flags,
attribute n_frames), the `detect` rows of `failures.csv`, and `qc/detect_contact_sheet.png`.
Each finished video is first written to `.detect-parts/` atomically, so a killed run resumes
where it stopped; `faces.h5` is assembled from the parts under a temporary name, then renamed.

`--shard K/N` (N processes or machines sharing the dataset folder): a slice detects every N-th pending
video from the K-th and writes only its verified parts (failures included, as parts); it writes no
faces.h5, failures.csv or state, which N processes would race on. One plain run afterwards finds every
part verified, detects nothing, and assembles faces.h5, failures.csv and the QC sheet.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import h5py
import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

from pipeline.align import builtin_margin
from pipeline.config import Config, DetectConfig
from pipeline.errors import PipelineError
from pipeline.facetrack import VideoResult, detect_video, shared_detector
from pipeline.io import Failure, atomic_path, clean_stale_temporaries, read_manifest
from pipeline.layout import layout_for
from pipeline.qc import detect_contact_sheet
from pipeline.runner import Outcome
from pipeline.tracking import DETECTED, FILLED, FaceTrack

log = logging.getLogger(__name__)


def part_path(parts: Path, video_id: str) -> Path:
    return parts / (hashlib.sha1(video_id.encode()).hexdigest()[:20] + ".npz")


def save_part(path: Path, res: VideoResult, sig: str, detector: str = "") -> None:
    buf = io.BytesIO()
    arrays = {"video_id": np.array(res.video_id), "signature": np.array(sig), "detector": np.array(detector),
              "n_frames": np.array(res.n_frames), "size": np.array([res.width, res.height]),
              "kind": np.array(res.kind), "message": np.array(res.message), "det_size": np.array(res.det_size)}
    if res.track is not None:
        arrays.update(boxes=res.track.boxes, landmarks=res.track.landmarks, scores=res.track.scores, flags=res.track.flags)
    np.savez(buf, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_part(path: Path, video_id: str, sig: str) -> VideoResult | None:
    """A verified part, or None when missing, unreadable, from other parameters or inconsistent."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if str(z["video_id"]) != video_id or str(z["signature"]) != sig:
                return None
            n, (w, h) = int(z["n_frames"]), z["size"].tolist()
            if str(z["kind"]):
                return VideoResult(video_id, None, n, w, h, str(z["kind"]), str(z["message"]))
            track = FaceTrack(z["boxes"], z["landmarks"], z["scores"], z["flags"])
            det_size = int(z["det_size"])
    except (OSError, ValueError, KeyError):
        return None
    if not (len(track.boxes) == len(track.flags) == n and np.isfinite(track.landmarks).all()):
        return None
    return VideoResult(video_id, track, n, w, h, det_size=det_size)


def part_detector(path: Path) -> str:
    """The detector a part was made with ("" for parts written before parts recorded it)."""
    try:
        with np.load(path) as z:
            return str(z["detector"]) if "detector" in z.files else ""
    except (OSError, ValueError):
        return ""


def write_faces(path: Path, results: list[VideoResult], attrs: dict) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        for r in results:
            g = f.create_group(r.video_id)  # ids with `/` become nested groups
            g.create_dataset("boxes", data=r.track.boxes.astype(np.float32))
            g.create_dataset("landmarks", data=r.track.landmarks.astype(np.float32))
            g.create_dataset("scores", data=r.track.scores.astype(np.float32))
            g.create_dataset("flags", data=r.track.flags.astype(np.uint8))
            g.attrs["n_frames"] = r.n_frames
            g.attrs["width"], g.attrs["height"] = r.width, r.height
            g.attrs["det_size"] = r.det_size


def read_track(f: h5py.File, video_id: str) -> FaceTrack:
    g = f[video_id]
    return FaceTrack(g["boxes"][:], g["landmarks"][:], g["scores"][:], g["flags"][:])


def work(cfg: Config, dataset: str, *, sig: str, force: bool = False, workers: int | None = None,
         shard: tuple[int, int] | None = None) -> Outcome:
    """Detect every pending video (all of them when forced: `--force` recomputes, parts included)."""
    dcfg = cfg.detect
    lay = layout_for(cfg, dataset)
    if not lay.manifest.exists():
        raise PipelineError(f"{lay.manifest} not found: run `pipeline run manifest --dataset {dataset}` first")
    rows = read_manifest(lay.manifest)
    todo = [r for r in rows if r.ok]
    if shard is not None:  # a slice of the manifest's order, the same in every process
        todo = todo[shard[0]::shard[1]]
        for r in todo:  # only this slice's leftovers: the other slices may be writing theirs right now
            clean_stale_temporaries(lay.parts, f".{part_path(lay.parts, r.video_id).name}.*.tmp")
    else:
        clean_stale_temporaries(lay.parts)
    lay.parts.mkdir(parents=True, exist_ok=True)
    results: dict[str, VideoResult] = {}
    for r in [] if force else todo:
        done = load_part(part_path(lay.parts, r.video_id), r.video_id, sig)
        if done is not None:
            results[r.video_id] = done
    pending = [r for r in todo if r.video_id not in results]
    n_resumed = len(results)
    n_workers = max(1, min(workers or dcfg.workers, len(pending) or 1))
    if dcfg.threads == 0:  # split the cores between worker processes rather than oversubscribing
        dcfg = DetectConfig(**{**dcfg.__dict__, "threads": max(1, (os.cpu_count() or 1) // n_workers)})
    # Built once here and reused by detect_video when it runs in this process (workers == 1).
    # Every video resumed (the assembling run after `--shard` slices): the parts name the detector that ran.
    described = {part_detector(part_path(lay.parts, r.video_id)) for r in todo} if not pending else set()
    describe = (" + ".join(sorted(described)) if described and "" not in described
                else shared_detector(dcfg).describe())
    log.info("detector: %s; %d videos to detect, %d resumed", describe, len(pending), len(results))
    jobs = (delayed(detect_video)(r, dcfg) for r in pending)
    gen = Parallel(n_jobs=n_workers, return_as="generator_unordered")(jobs) if n_workers > 1 else (
        detect_video(r, dcfg) for r in pending)
    for res in tqdm(gen, total=len(pending), desc=f"detect {dataset}", unit="video"):
        save_part(part_path(lay.parts, res.video_id), res, sig, describe)  # durable before counted
        results[res.video_id] = res
    if shard is not None:  # parts only: no failure rows, no state (the runner records nothing for a slice)
        return Outcome({"stage": "detect", "dataset": dataset, "shard": f"{shard[0]}/{shard[1]}", "detector": describe,
                        "videos": len(todo), "detected_now": len(pending), "resumed": n_resumed,
                        "failed": sum(v.track is None for v in results.values()), "parts": str(lay.parts),
                        "next": f"after every slice: pipeline run detect --dataset {dataset} --no-deps "
                                "(assembles faces.h5)"}, complete=False)

    good = [results[r.video_id] for r in todo if results[r.video_id].track is not None]
    failures = [Failure(v.video_id, "detect", v.kind, v.message) for v in results.values() if v.track is None]
    # No signature inside: the runner's `.state/detect.json` is the one record of what made faces.h5.
    write_faces(lay.faces, good, {"detector": describe, "stride": dcfg.stride, "det_size": dcfg.det_size})
    e = cfg.extract  # null crop_size / margin: the backbone's (plug-in input sizes need the library; 224 drawn)
    sheet = detect_contact_sheet(rows, good, lay.contact_sheet, dcfg.qc_samples,
                                 size=e.crop_size or 224,
                                 margin=e.margin if e.margin is not None else builtin_margin(e.backbone))
    frames = sum(v.n_frames for v in good)
    n_det = sum(int((v.track.flags == DETECTED).sum()) for v in good)
    n_fill = sum(int((v.track.flags == FILLED).sum()) for v in good)
    n_failed = len(rows) - len(good)
    summary = {
        "stage": "detect", "dataset": dataset, "detector": describe, "videos": len(rows), "tracked": len(good),
        "detected_now": len(pending), "resumed": n_resumed,
        "frames": frames, "pct_detected": round(100.0 * n_det / max(frames, 1), 2),
        "pct_filled": round(100.0 * n_fill / max(frames, 1), 2), "failed": n_failed,
        "faces": str(lay.faces), "contact_sheet": str(sheet) if sheet else None,
    }
    return Outcome(summary, failures, replace_ids=[r.video_id for r in rows], n_items=len(rows), n_failed=n_failed)
