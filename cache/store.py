"""Writing shards: `<data_root>/D/features/shard-00000.h5`, one array per field, one video per chunk.

Layout measured in docs/reference.md §6: one contiguous array per shard chunked (1, 105, D), uncompressed,
reads random clips ~7x faster than one dataset per video, and fits h5py's 1 MiB chunk cache.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from cache.files import atomic_path, file_lock

FORMAT_VERSION = 2
"""2: a CRC-32 of every row of `features` (`features_crc32`); 1 had none (issue 16)."""
SHARD_GLOB = "shard-*.h5"
CHECKSUM = "features_crc32"
"""(N,) uint32: zlib.crc32 of each video's (T, D) float16 features, C order, little-endian."""


def row_crc32(features: np.ndarray) -> int:
    """The checksum stored for one row; ~0.04 ms for a (105, 512) float16 row on this machine."""
    a = np.ascontiguousarray(features, dtype="<f2")
    return zlib.crc32(memoryview(a).cast("B"))


@dataclass
class ShardRecord:
    """One video's cached features and the face data that produced them."""

    video_id: str
    label: int
    subject: str
    features: np.ndarray  # (T, D) float16
    frame_index: np.ndarray  # (T,) int
    flags: np.ndarray  # (T,) uint8
    landmarks: np.ndarray  # (T, 5, 2) float32, original pixels
    crops: Sequence[bytes] | None = None  # T JPEG images when --keep-crops


def shard_name(index: int, shard: tuple[int, int] | None = None) -> str:
    """`shard-00000.h5`; with `--shard k/N` the worker's index keeps names unique across processes."""
    return f"shard-{index:05d}.h5" if shard is None or shard[1] == 1 else f"shard-{shard[0]:03d}of{shard[1]:03d}-{index:05d}.h5"


def read_strings(ds: h5py.Dataset) -> list[str]:
    """A string dataset (`video_id`, `subject`) as Python str; h5py returns bytes unless asked."""
    return ds.asstr()[:].tolist()


def list_shards(features_dir: Path) -> list[Path]:
    return sorted(Path(features_dir).glob(SHARD_GLOB))


def write_shard(path: Path, records: Sequence[ShardRecord], attrs: dict) -> None:
    """Write a complete shard atomically (temporary name, then rename)."""
    if not records:
        raise ValueError("write_shard: no records")
    n, (t, d) = len(records), records[0].features.shape
    str_dt = h5py.string_dtype("utf-8")
    with atomic_path(Path(path)) as tmp:
        with h5py.File(tmp, "w") as f:
            feats = f.create_dataset("features", (n, t, d), dtype="float16", chunks=(1, t, d))
            crcs = np.zeros(n, np.uint32)
            for i, r in enumerate(records):
                if r.features.shape != (t, d):
                    raise ValueError(f"{r.video_id}: features {r.features.shape}, expected {(t, d)}")
                row = r.features.astype(np.float16)
                feats[i] = row
                crcs[i] = row_crc32(row)
            # Of the values handed to HDF5, so a flip anywhere between here and a later read is caught.
            f.create_dataset(CHECKSUM, data=crcs)
            f.create_dataset("video_id", data=np.array([r.video_id for r in records], dtype=object), dtype=str_dt)
            f.create_dataset("label", data=np.array([r.label for r in records], dtype=np.int64))
            f.create_dataset("subject", data=np.array([r.subject for r in records], dtype=object), dtype=str_dt)
            f.create_dataset("frame_index", data=np.stack([r.frame_index for r in records]).astype(np.int32))
            f.create_dataset("flags", data=np.stack([r.flags for r in records]).astype(np.uint8))
            f.create_dataset("landmarks", data=np.stack([r.landmarks for r in records]).astype(np.float32),
                             chunks=(1, t, 5, 2))
            if records[0].crops is not None:
                crops = f.create_dataset("crops", (n, t), dtype=h5py.vlen_dtype(np.uint8))
                for i, r in enumerate(records):
                    for j, jpg in enumerate(r.crops):
                        crops[i, j] = np.frombuffer(jpg, dtype=np.uint8)
            for k, v in attrs.items():
                f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) and k != "class_names" else v


def drop_rows(path: Path, rows: Sequence[int]) -> int:
    """Rewrite a shard without `rows` (damaged ones), atomically, keeping its attributes; returns the
    rows left. A shard left empty is removed. The kept rows are copied as stored (their checksums
    were just verified), so the repair recomputes only the dropped videos."""
    drop = set(rows)
    with h5py.File(path, "r") as f:
        keep = [i for i in range(f["features"].shape[0]) if i not in drop]
        attrs = dict(f.attrs)
        col = {k: f[k][keep] if keep else None for k in ("features", "label", "frame_index", "flags", "landmarks")}
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in f["video_id"][:]]
        subj = [v.decode() if isinstance(v, bytes) else str(v) for v in f["subject"][:]]
        crops = [[bytes(c) for c in f["crops"][i]] for i in keep] if "crops" in f else None
    if not keep:
        Path(path).unlink()
        return 0
    records = [ShardRecord(ids[i], int(col["label"][j]), subj[i], col["features"][j], col["frame_index"][j],
                           col["flags"][j], col["landmarks"][j], crops[j] if crops is not None else None)
               for j, i in enumerate(keep)]
    write_shard(path, records, attrs)
    return len(keep)


def write_index(features_dir: Path) -> Path | None:
    """`index.h5`: virtual datasets presenting all shards as one (features, label, frame_index, flags),
    plus a plain `video_id`/`shard`/`row` table. Rebuilt atomically after each extract run.

    Locked from listing to rename: of `--shard` processes finishing together, the last writer has
    seen every shard (unlocked, an index listing fewer shards could be renamed last)."""
    with file_lock(Path(features_dir) / "index.h5"):
        return _write_index(features_dir)


def _write_index(features_dir: Path) -> Path | None:
    shards = list_shards(features_dir)
    if not shards:
        return None
    sizes, ids, shard_of, rows, attrs = [], [], [], [], {}
    shapes: dict[str, tuple] = {}
    for s in shards:
        with h5py.File(s, "r") as f:
            n = f["features"].shape[0]
            sizes.append(n)
            ids += read_strings(f["video_id"])
            shard_of += [s.name] * n
            rows += list(range(n))
            for name in ("features", "label", "frame_index", "flags"):
                shapes[name] = (f[name].shape[1:], f[name].dtype)
            attrs = dict(f.attrs)
    total = sum(sizes)
    out = Path(features_dir) / "index.h5"
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        for name, (tail, dtype) in shapes.items():
            layout = h5py.VirtualLayout(shape=(total, *tail), dtype=dtype)
            start = 0
            for s, n in zip(shards, sizes):
                # Relative source paths: the folder can be moved or copied as a whole.
                layout[start:start + n] = h5py.VirtualSource(s.name, name, shape=(n, *tail))
                start += n
            f.create_virtual_dataset(name, layout)
        str_dt = h5py.string_dtype("utf-8")
        f.create_dataset("video_id", data=np.array(ids, dtype=object), dtype=str_dt)
        f.create_dataset("shard", data=np.array(shard_of, dtype=object), dtype=str_dt)
        f.create_dataset("row", data=np.array(rows, dtype=np.int64))
        for k, v in attrs.items():
            f.attrs[k] = v
    return out
