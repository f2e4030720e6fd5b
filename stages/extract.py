"""extract: aligned 224x224 faces → per-frame backbone features, cached in HDF5 shards.

Reads `faces.h5` (tracks), `frames.h5` (the 105 chosen frame numbers) and the videos; writes
`features/shard-*.h5` (docs/cache.md, "Shard format") and `features/index.h5`, plus `extract` rows of
`failures.csv` and `qc/extract_contact_sheet.png` (sampled videos' chosen frames as aligned, with the face mesh
when the motion has it). Decoding + alignment run in worker processes while the network runs here
(bounded in flight, so memory does not grow with the number of videos). Each shard is written
under a temporary name and renamed when complete; a rerun verifies existing shards and skips
their videos, so a killed run resumes and produces the same features.
"""
from __future__ import annotations

import dataclasses
import logging
import platform
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from cache.integrity import ShardCheck, check_open_shard
from cache.store import (FORMAT_VERSION, ShardRecord, drop_rows, list_shards, read_strings, shard_name,
                         write_index, write_shard)
from pipeline.align import align
from pipeline.config import Config, ExtractConfig
from pipeline.errors import PipelineError, VideoError
from pipeline.features import FeatureExtractor, build_extractor
from pipeline.motion import mesh_crops, motion_features
from pipeline.io import Failure, clean_stale_temporaries, read_manifest
from pipeline.labels import DEFAULT_CLASSES
from pipeline.layout import layout_for, resolve
from pipeline.qc_extract import extract_contact_sheet
from pipeline.registry import EXTRACT_SHEET
from pipeline.runner import Outcome
from pipeline.workers import process_pool
from pipeline.video import read_frames

log = logging.getLogger(__name__)


@dataclass
class VideoTask:
    video_id: str
    path: str
    crop: str | None
    label: int
    subject: str
    frame_index: np.ndarray  # (T,)
    flags: np.ndarray  # (T,)
    landmarks: np.ndarray  # (T, 5, 2)


@dataclass
class Prepared:
    task: VideoTask
    crops: np.ndarray | None  # (T, S, S, 3) uint8
    jpegs: list[bytes] | None
    motion: np.ndarray | None = None  # (T, motion_dim) float32: extract.motion, from the video's own first frame
    error: VideoError | None = None


def prepare(task: VideoTask, size: int, margin: float, keep_crops: bool, quality: int, motion: str) -> Prepared:
    """Decode the chosen frames once (sequentially), align each and compute their motion features; runs in a
    worker process, beside the network."""
    try:
        frames = read_frames(Path(task.path), task.frame_index, crop=task.crop)
    except VideoError as err:
        return Prepared(task, None, None, error=err)
    crops = np.stack([align(frames[int(i)], lm, size, margin) for i, lm in zip(task.frame_index, task.landmarks)])
    jpegs = None
    if keep_crops:
        jpegs = [cv2.imencode(".jpg", c[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes() for c in crops]
    return Prepared(task, crops, jpegs, motion_features(crops, motion, mesh_crops(frames, task.frame_index,
                                                                                 task.landmarks, motion)))


def class_names_for(cfg: Config, dataset: str, labels: list[str]) -> list[str]:
    """The dataset's class set in a fixed order: params `classes`, else the adapter's, else sorted labels."""
    ds = cfg.dataset_config(dataset)
    names = ds.classes or DEFAULT_CLASSES.get(ds.adapter)
    return list(names) if names else sorted({lb for lb in labels if lb})


def load_tasks(cfg: Config, dataset: str) -> tuple[list[VideoTask], list[str]]:
    lay = layout_for(cfg, dataset)
    for path, stage in ((lay.faces, "detect"), (lay.frames, "resample")):
        if not path.exists():
            raise PipelineError(f"{path} not found: run `pipeline run {stage} --dataset {dataset}` first")
    rows = [r for r in read_manifest(lay.manifest) if r.ok]
    classes = class_names_for(cfg, dataset, [r.label for r in rows])
    tasks = []
    with h5py.File(lay.faces, "r") as f, h5py.File(lay.frames, "r") as frames:
        for r in rows:
            if r.video_id not in f or r.video_id not in frames:
                continue  # failed upstream, recorded there
            g = f[r.video_id]
            idx = frames[r.video_id]["frame_index"][:]
            tasks.append(VideoTask(r.video_id, r.path, r.crop_side, classes.index(r.label) if r.label in classes else -1,
                                   r.subject, idx, g["flags"][:][idx], g["landmarks"][:][idx]))
    return sorted(tasks, key=lambda t: t.video_id), classes


def versions() -> dict:
    import onnxruntime
    import torch
    import torchvision

    import pipeline

    return {"pipeline": pipeline.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__, "h5py": h5py.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__}


def shard_attrs(cfg: Config, dataset: str, extractor: FeatureExtractor, classes: list[str], sig: str,
                shard: tuple[int, int] | None) -> dict:
    params = {"extract": {k: v for k, v in cfg.extract.__dict__.items() if k not in ("workers", "threads", "device", "batch_size")},
              "resample": cfg.resample.__dict__, "detect": cfg.detect.__dict__}
    return {**extractor.provenance(), "class_names": classes, "format_version": FORMAT_VERSION, "dataset": dataset,
            "signature": sig, "params": params, "params_hash": sig, "versions": versions(),
            "shard_slice": f"{shard[0]}/{shard[1]}" if shard else "0/1"}


def verified_shard(path: Path, sig: str, need_crops: bool = False) -> ShardCheck | None:
    """The row checksums of a complete shard made with the same signature, or None when it is stale
    (other parameters, or no crops when `need_crops`), incomplete, or from before shards carried
    checksums: its videos are recomputed.

    An OSError is not a verdict on the work inside (a flaky disk or network mount reads the same as a
    damaged header): the run stops and deletes nothing (issue 13)."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("signature") != sig or (need_crops and "crops" not in f):
                return None
            n = f["features"].shape[0]
            if f["video_id"].shape[0] != n or f["label"].shape[0] != n:
                return None
            check = check_open_shard(f, path)
    except KeyError:  # a dataset missing: not a shard this code wrote completely
        return None
    except OSError as err:
        raise PipelineError(f"cannot read {path} ({err}); nothing was deleted. If the disk or mount is flaky, "
                            "rerun later; if this file is damaged, move it away and rerun: only its videos are "
                            "re-extracted") from err
    if check.legacy:
        log.warning("%s was written before shards carried checksums: its videos are re-extracted", path.name)
        return None
    return check


def _all_intact(features: Path, sig: str, need_crops: bool) -> bool:
    """The fast path's check, run every time (bench/bench_checksum.py: its cost against extract)."""
    for s in list_shards(features):
        check = verified_shard(s, sig, need_crops)
        if check is None or not check.ok:
            return False
    return True


def _prepared_stream(tasks: list[VideoTask], e: ExtractConfig, workers: int) -> Iterator[Prepared]:
    """Decode/align in `workers` processes, at most 2 per worker in flight (flat memory), in task order."""
    args = (e.crop_size, e.margin, e.keep_crops, e.jpeg_quality, e.motion)
    if workers == 0:
        yield from (prepare(t, *args) for t in tasks)
        return
    with process_pool(workers) as pool:  # its workers exit if this process is killed
        inflight: deque[Future] = deque()
        it = iter(tasks)
        for t in it:
            inflight.append(pool.submit(prepare, t, *args))
            if len(inflight) >= 2 * workers:
                break
        while inflight:
            yield inflight.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                inflight.append(pool.submit(prepare, nxt, *args))


def extract_chunk(prepared: Iterator[Prepared], extractor: FeatureExtractor, batch_size: int,
                  on_video, fidelity: dict | None = None) -> tuple[list[ShardRecord], list[Failure]]:
    """Features for one shard's videos, batching frames across videos in a fixed order (reproducible).

    int8: `fidelity` receives the cosine similarity to fp32 on the chunk's first batch (its own crops,
    not the calibration set), which the caller records in the shard's attributes."""
    records: list[ShardRecord] = []
    failures: list[Failure] = []
    queue: list[tuple[ShardRecord, np.ndarray]] = []  # videos whose features are still being filled
    buf: list[np.ndarray] = []
    owners: list[tuple[int, int]] = []  # (position in queue, frame) for each buffered crop

    def run_batch(n: int) -> None:
        crops = np.stack(buf[:n])
        feats = extractor(crops)
        if extractor.reference is not None and fidelity is not None and not fidelity:
            fidelity.update(extractor.fidelity(crops, feats))
        for (q, j), ft in zip(owners[:n], feats):
            queue[q][1][j, :extractor.dim] = ft
        del buf[:n], owners[:n]

    for p in prepared:
        on_video()
        t = p.task
        if p.error is not None:
            failures.append(Failure(t.video_id, "extract", p.error.kind, p.error.message))
            continue
        rec = ShardRecord(t.video_id, t.label, t.subject, np.empty(0), t.frame_index, t.flags, t.landmarks, p.jpegs)
        feats = np.zeros((len(p.crops), extractor.out_dim), np.float32)
        feats[:, extractor.dim:] = p.motion
        queue.append((rec, feats))
        for j, c in enumerate(p.crops):
            buf.append(c)
            owners.append((len(queue) - 1, j))
            if len(buf) == batch_size:
                run_batch(batch_size)
    if buf:
        run_batch(len(buf))
    for rec, feats in queue:
        if not np.isfinite(feats).all():
            failures.append(Failure(rec.video_id, "extract", "non_finite", "backbone produced NaN/Inf features"))
            continue
        rec.features = feats.astype(np.float16)
        records.append(rec)
    return records, failures


def verify_outputs(cfg: Config, dataset: str, sig: str) -> bool:
    """The registry's `verify` hook, the runner's last word before skipping: every shard's row checksums still match (a damaged
    row is repaired by the run instead of being read by training)."""
    features = layout_for(cfg, dataset).features
    return (features / "index.h5").exists() and _all_intact(features, sig, cfg.extract.keep_crops)


def holds_crops(features: Path) -> bool:
    """Whether any shard of the cache keeps its crops (fine-tuning's input)."""
    for s in list_shards(features):
        try:
            with h5py.File(s, "r") as f:
                if "crops" in f:
                    return True
        except OSError:
            continue  # unreadable: verified_shard reports it
    return False


def work(cfg: Config, dataset: str, *, sig: str, force: bool = False, workers: int | None = None,
         shard: tuple[int, int] | None = None) -> Outcome:
    e = cfg.extract
    lay = layout_for(cfg, dataset)
    extractor = build_extractor(e)  # missing weights stop here, before any video is opened
    # null crop_size / margin: the backbone's own (its input size; a looser crop for CLIP)
    e = dataclasses.replace(e, crop_size=extractor.crop_size, margin=extractor.margin)
    # Crops are hours of work that fine-tuning reads (issue 29): a cache that holds them keeps them,
    # whatever this run's extract.keep_crops says; deleting features/ is how to drop them.
    if not e.keep_crops and holds_crops(lay.features):
        log.info("%s holds crops (fine-tuning's input): every shard written keeps them, though extract.keep_crops "
                 "is false; delete the folder to drop them", lay.features)
        e = dataclasses.replace(e, keep_crops=True)
    tasks, classes = load_tasks(cfg, dataset)
    if shard is not None:
        k, n = shard
        tasks = tasks[k::n]
    lay.features.mkdir(parents=True, exist_ok=True)
    prefix = shard_name(0, shard).rsplit("-", 1)[0]
    # A slice removes only its own leftovers: the other slices may be writing theirs right now.
    clean_stale_temporaries(lay.features, f".{prefix}-*.tmp" if shard and shard[1] > 1 else ".*.tmp")
    done: set[str] = set()
    used: list[int] = []
    repaired: list[str] = []
    for s in list_shards(lay.features):
        own_name = s.name.rsplit("-", 1)[0] == prefix  # numbered in this run's series
        mine = shard is None or own_name  # a plain run owns every shard; a slice only its own
        check = None if force and mine else verified_shard(s, sig, e.keep_crops)
        if check is None:
            if mine:
                s.unlink()  # forced, stale (other parameters) or unchecked: its videos are recomputed
            continue  # another slice's stale shard is that slice's to redo
        if check.damaged:
            if not mine:
                continue
            log.warning("%s; re-extracting them", check.problem(dataset))
            repaired += [check.video_ids[i] for i in check.damaged]
            drop_rows(s, check.damaged)  # the good rows stay as they are
            if not s.exists():
                continue
        damaged = set(check.damaged)
        done.update(v for i, v in enumerate(check.video_ids) if i not in damaged)
        if own_name:
            used.append(int(s.stem.rsplit("-", 1)[1]))
    pending = [t for t in tasks if t.video_id not in done]
    attrs = shard_attrs(cfg, dataset, extractor, classes, sig, shard)
    failures: list[Failure] = []
    n_workers = e.workers if workers is None else workers
    next_index = max(used, default=-1) + 1
    with tqdm(total=len(pending), desc=f"extract {dataset}", unit="video") as bar:
        for start in range(0, len(pending), e.shard_size):
            chunk = pending[start:start + e.shard_size]
            fidelity: dict = {}
            records, fails = extract_chunk(_prepared_stream(chunk, e, n_workers), extractor, e.batch_size, bar.update,
                                           fidelity)
            failures += fails
            if records:
                fid = {f"int8_fidelity_{k}": v for k, v in fidelity.items()}
                if fidelity:
                    log.info("int8 fidelity (cosine to fp32, %d frames): mean %.4f, min %.4f", fidelity["frames"],
                             fidelity["cos_mean"], fidelity["cos_min"])
                write_shard(lay.features / shard_name(next_index, shard), records, {**attrs, **fid})
                next_index += 1
    write_index(lay.features)
    sheet = None if shard else extract_contact_sheet(tasks, resolve(EXTRACT_SHEET, cfg, dataset),
                                                     cfg.detect.qc_samples, e.motion, e.crop_size, e.margin)
    n_cached = len(done) + len(pending) - len(failures)
    summary = {"stage": "extract", "dataset": dataset, **extractor.provenance(), "videos": len(tasks),
               "computed": len(pending) - len(failures), "resumed": len(tasks) - len(pending), "cached": n_cached,
               "repaired": len(repaired),
               "failed": len(failures), "shards": len(list_shards(lay.features)), "features": str(lay.features),
               "contact_sheet": str(sheet) if sheet else None}  # None: a slice (--shard) draws none
    return Outcome(summary, failures, replace_ids=[t.video_id for t in pending], n_items=len(tasks),
                   complete=shard is None)

