"""`pipeline cache verify` and `pipeline cache info`: is the cache complete and consistent? (A command: it
reads the manifest, failures.csv and finetune's packs besides the store, so it lives above `cache/`.)"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from cache.integrity import check_open_shard
from cache.reader import _attr
from cache.store import list_shards, read_strings
from pipeline.io import read_failures, read_manifest
from pipeline.layout import layout_for

REQUIRED = {"features": 3, "video_id": 1, "label": 1, "subject": 1, "frame_index": 2, "flags": 2, "landmarks": 4}
PROVENANCE = ("backbone", "feature_dim", "weights", "weights_sha256", "input_convention", "format_version",
              "class_names", "params_hash")


def _check_shard(path: Path, problems: list[str]) -> tuple[list[str], dict]:
    with h5py.File(path, "r") as f:
        for name, ndim in REQUIRED.items():
            if name not in f:
                problems.append(f"{path.name}: dataset {name} missing")
            elif f[name].ndim != ndim:
                problems.append(f"{path.name}: {name} has {f[name].ndim} dims, expected {ndim}")
        if any(n not in f for n in REQUIRED):
            return [], {}
        n, t, d = f["features"].shape
        if f["features"].dtype != np.float16:
            problems.append(f"{path.name}: features dtype {f['features'].dtype}, expected float16")
        for name in REQUIRED:
            if f[name].shape[0] != n:
                problems.append(f"{path.name}: {name} has {f[name].shape[0]} rows, features {n}")
        if f["frame_index"].shape[1:] != (t,) or f["landmarks"].shape[1:] != (t, 5, 2):
            problems.append(f"{path.name}: frame_index/landmarks shapes do not match T={t}")
        for i in range(n):  # chunk per video: reading row by row keeps memory flat
            if not np.isfinite(f["features"][i]).all():
                problems.append(f"{path.name}: row {i} has non-finite features")
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        check = check_open_shard(f, path)
        if not check.ok:
            problems.append(check.problem(str(attrs.get("dataset") or check.dataset)))
        for k in PROVENANCE:
            if k not in attrs:
                problems.append(f"{path.name}: attribute {k} missing")
        if attrs.get("feature_dim") not in (None, d):
            problems.append(f"{path.name}: feature_dim attribute {attrs.get('feature_dim')} but features have {d}")
        labels = f["label"][:]
        n_classes = len(attrs.get("class_names", []))
        if n_classes and (labels >= n_classes).any():
            problems.append(f"{path.name}: labels outside class_names")
        ids = read_strings(f["video_id"])
    return ids, attrs


def verify(cfg, dataset: str) -> tuple[list[str], dict]:
    lay = layout_for(cfg, dataset)
    problems: list[str] = []
    shards = list_shards(lay.features)
    if not shards:
        return [f"no shards under {lay.features}"], {"shards": 0}
    all_ids: list[str] = []
    first: dict | None = None
    for s in shards:
        ids, attrs = _check_shard(s, problems)
        all_ids += ids
        if first is None:
            first = attrs
        else:
            for k in PROVENANCE:
                if attrs.get(k) != first.get(k):
                    problems.append(f"{s.name}: provenance {k}={attrs.get(k)!r} differs from {shards[0].name} ({first.get(k)!r})")
    dup = [v for v, c in Counter(all_ids).items() if c > 1]
    if dup:
        problems.append(f"{len(dup)} videos cached more than once, e.g. {dup[:3]}")
    failed = {f.video_id for f in read_failures(lay.failures)}
    manifest_ids = {r.video_id for r in read_manifest(lay.manifest)} if lay.manifest.exists() else set()
    if not lay.manifest.exists():  # nothing to check completeness against: that is a failure, not a pass
        problems.append(f"{lay.manifest} not found: cannot check that every video is cached "
                        f"(run `pipeline run manifest --dataset {dataset}`)")
    missing = sorted(manifest_ids - set(all_ids) - failed)
    if missing:
        problems.append(f"{len(missing)} manifest videos neither cached nor in failures.csv, e.g. {missing[:3]}")
    extra = sorted(set(all_ids) - manifest_ids) if manifest_ids else []
    if extra:
        problems.append(f"{len(extra)} cached videos not in manifest.csv, e.g. {extra[:3]}")
    index = lay.features / "index.h5"
    if index.exists():
        with h5py.File(index, "r") as f:
            if f["features"].shape[0] != len(all_ids):
                problems.append(f"index.h5 lists {f['features'].shape[0]} videos, shards hold {len(all_ids)} "
                                "(rerun extract to rebuild it)")
    problems += _check_packs(lay.crops_pack)
    stats = {"dataset": dataset, "shards": len(shards), "videos": len(all_ids), "manifest_videos": len(manifest_ids),
             "failed_videos": len((failed & manifest_ids) - set(all_ids)), "backbone": (first or {}).get("backbone"),
             "weights": (first or {}).get("weights")}
    return problems, stats


def info(cfg, dataset: str) -> dict:
    lay = layout_for(cfg, dataset)
    shards = list_shards(lay.features)
    out: dict = {"dataset": dataset, "features": str(lay.features), "shards": len(shards), "videos": 0,
                 "bytes": sum(s.stat().st_size for s in shards)}
    labels: Counter = Counter()
    crops = {"videos": 0, "bytes": 0}
    for s in shards:
        with h5py.File(s, "r") as f:
            out["videos"] += f["features"].shape[0]
            if "crops" in f:
                crops["videos"] += f["crops"].shape[0]
                crops["bytes"] += _crops_bytes(s, f)
            out["shape_per_video"] = list(f["features"].shape[1:])
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            names = attrs.get("class_names", [])
            labels.update(names[i] if 0 <= i < len(names) else "(unlabelled)" for i in f["label"][:])
    if shards:
        out["provenance"] = {k: attrs.get(k) for k in ("backbone", "feature_dim", "weights", "weights_sha256",
                                                       "input_convention", "precision", "format_version", "params_hash",
                                                       "versions")}
        # plug-in backbones (timm:, open_clip:) and caches written since they exist
        out["provenance"].update({k: attrs[k] for k in ("model", "library", "library_version", "weights_file",
                                                        "feature_output", "preprocess") if k in attrs})
        out["params"] = attrs.get("params")
    out["per_class"] = dict(labels)
    out["failures"] = dict(Counter(f"{f.stage}:{f.kind}" for f in read_failures(lay.failures)))
    out["mb"] = round(out["bytes"] / 2**20, 2)
    if crops["videos"]:
        out["crops"] = {**crops, "mb": round(crops["bytes"] / 2**20, 2)}
    packs = sorted(lay.crops_pack.glob("pack-*.bin"))
    if packs:  # finetune's pack of those crops: a second copy on disk
        size = sum(p.stat().st_size for p in packs)
        out["crops_pack"] = {"files": [p.name for p in packs], "bytes": size, "mb": round(size / 2**20, 2)}
    finetuned = _finetuned_caches(lay.finetuned)
    if finetuned:
        out["finetuned"] = finetuned
    return out


def _crops_bytes(path: Path, f: h5py.File) -> int:
    """On-disk size of a shard's JPEG crops: the file minus every other dataset's storage.

    A variable-length dataset's own storage holds only pointers into the file's heap, so the crops are what
    is left; reading every JPEG to measure it would cost as much as decoding the cache."""
    others = 0

    def visit(name: str, obj) -> None:
        nonlocal others
        if isinstance(obj, h5py.Dataset) and name != "crops":
            others += obj.id.get_storage_size()

    f.visititems(visit)
    return max(0, path.stat().st_size - others)


def _check_packs(folder: Path) -> list[str]:
    """Finetune's crops packs: every crop's bytes against the CRC-32 its index recorded (issue 29)."""
    from pipeline.finetune.crops import PackDamaged, _read_pack, pack_damage_message

    problems = []
    for meta in sorted(folder.glob("pack-*.npz")):
        data = meta.with_suffix(".bin")
        try:
            bad = _read_pack(meta, data, "finetune").damaged() if data.exists() else []
        except PackDamaged as err:
            problems.append(str(err))
            continue
        if bad:
            problems.append(pack_damage_message(data, f"{len(bad)} video(s) fail their crop checksums, e.g. {bad[:3]}"))
    return problems


def _finetuned_caches(folder: Path) -> dict:
    """`features/finetuned/fold-<k>/` written by `pipeline run finetune`: folds present and their size."""
    folds = sorted(p for p in folder.glob("fold-*") if p.is_dir()) if folder.is_dir() else []
    if not folds:
        return {}
    size = sum(f.stat().st_size for p in folds for f in p.glob("*.h5"))
    return {"folds": [p.name for p in folds], "bytes": size, "mb": round(size / 2**20, 2)}
