"""manifest: list a dataset's videos through its adapter and probe each one.

Reads the dataset root (params.yaml `datasets.<D>`, or `--adapter/--root`); writes
`<data_root>/D/manifest.csv` (one row per listed video, failures included with their status) and
the `manifest` rows of `failures.csv`. Probing decodes every frame once (grab only) because header
frame counts lie (docs/reference.md §5).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import fields

from joblib import Parallel, delayed
from tqdm import tqdm

from pipeline.adapters import VideoEntry, make_adapter
from pipeline.adapters.base import Listing
from pipeline.config import Config
from pipeline.errors import VideoError
from pipeline.io import Failure, ListedVideo, ManifestRow, read_failures, write_manifest
from pipeline.layout import layout_for
from pipeline.runner import Outcome
from pipeline.video import probe

log = logging.getLogger(__name__)


def list_entries(cfg: Config, dataset: str) -> Listing:
    ds = cfg.dataset_config(dataset)
    adapter = make_adapter(ds.adapter, cfg.resolve_root(dataset), classes=ds.classes, fps=ds.fps, options=ds.options)
    return adapter.list_videos()


# What the adapter listed is carried into the row by name; only `path` and `extra` change form (str, JSON).
LISTED = tuple(f.name for f in fields(ListedVideo) if f.name != "path")


def fingerprint(listing: Listing) -> str:
    """Changes when a video is added, removed or rewritten, or anything the adapter lists of it changes (every
    `ListedVideo` field and `extra`, by name: a field added there is covered without a change here)."""
    h = hashlib.sha256()
    for e in listing.entries:
        try:
            st = e.path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        listed = "|".join(str(getattr(e, k)) for k in ("path", *LISTED))
        h.update(f"{listed}|{json.dumps(e.extra, sort_keys=True, default=str)}|{stamp}\n".encode())
    return h.hexdigest()[:16]


def probe_entry(entry: VideoEntry, fps_default: float) -> ManifestRow:
    crop = entry.extra.get("crop") or ""
    extra = {k: v for k, v in entry.extra.items() if k != "crop"}
    row = ManifestRow(**{k: getattr(entry, k) for k in LISTED}, path=str(entry.path), crop=crop,
                      extra=json.dumps(extra) if extra else "")
    try:
        info = probe(entry.path, fps_default=fps_default, crop=crop or None)
    except VideoError as err:
        row.status, row.error = err.kind, err.message
        return row
    row.n_frames, row.header_frames, row.fps = info.n_frames, info.header_frames, info.fps
    row.width, row.height, row.rotation = info.width, info.height, info.rotation
    return row


def input_fingerprint(cfg: Config, dataset: str) -> str:
    """The registry's `fingerprint` hook: the dataset's listing (ids, labels, sizes, mtimes): cheap, and
    changes when a video is added, removed or rewritten — so `dvc repro` (which always runs this stage)
    notices new files."""
    return fingerprint(list_entries(cfg, dataset))


def work(cfg: Config, dataset: str, *, sig: str, force: bool = False) -> Outcome:
    lay = layout_for(cfg, dataset)
    listing = list_entries(cfg, dataset)
    seen: set[str] = set()
    entries, failures = [], [Failure(vid, "manifest", kind, msg) for vid, kind, msg in listing.problems]
    for e in listing.entries:
        if e.video_id in seen:
            failures.append(Failure(e.video_id, "manifest", "duplicate_id", f"{e.path}: id already used by another video"))
            continue
        seen.add(e.video_id)
        entries.append(e)
    fps = cfg.dataset_config(dataset).fps
    jobs = (delayed(probe_entry)(e, fps) for e in entries)
    # Starting worker processes costs ~1 s: not worth it for a handful of videos.
    n_jobs = cfg.manifest.workers if len(entries) >= 16 else 1
    rows = list(tqdm(Parallel(n_jobs=n_jobs, return_as="generator")(jobs),
                     total=len(entries), desc=f"probe {dataset}", unit="video", leave=False))
    failures += [Failure(r.video_id, "manifest", r.status, r.error) for r in rows if not r.ok]
    write_manifest(rows, lay.manifest)
    # This stage owns its failure rows: replace all of them (a fixed file no longer fails).
    old_ids = [f.video_id for f in read_failures(lay.failures) if f.stage == "manifest"]
    labels = Counter(r.label for r in rows if r.ok)
    summary = {
        "stage": "manifest", "dataset": dataset, "videos": len(rows), "ok": sum(r.ok for r in rows),
        "failed": len(failures), "frames": sum(r.n_frames for r in rows),
        # An empty label is "no label" (a `folder` dataset without class folders), not a class.
        "labels": {k: v for k, v in labels.items() if k}, "unlabelled": labels.get("", 0),
        "excluded": listing.excluded, "manifest": str(lay.manifest),
    }
    return Outcome(summary, failures, replace_ids=old_ids)
