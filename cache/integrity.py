"""Are the cached features still the values extract wrote? Each shard row carries a CRC-32 (issue 16).

A flipped bit inside a row's chunk keeps the file readable and often keeps the values finite, so
neither h5py nor `isfinite` notices it: only a checksum written with the row does. Checking reads
every row once (block by block, flat memory); bench/bench_checksum.py measures it against extract.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from cache.store import CHECKSUM, row_crc32

BLOCK = 64
"""Rows read at once: 64 x 105 x 512 float16 = 6.9 MB."""


@dataclass
class ShardCheck:
    path: Path
    video_ids: list[str]
    damaged: list[int] = field(default_factory=list)
    """Rows whose features no longer match their checksum."""
    legacy: bool = False
    """Written before shards carried checksums (format 1): cannot be checked, must be re-extracted."""

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.legacy

    def problem(self, dataset: str) -> str:
        """One line: what is wrong with this shard (named by its folder) and the command that repairs it."""
        where, fix = self.repair(dataset)
        if self.legacy:
            return (f"{where} was written before shards carried checksums (format 1) and cannot be "
                    f"checked: rewrite it with {fix}")
        ids = [self.video_ids[i] if i < len(self.video_ids) else f"row {i}" for i in self.damaged]
        return (f"{where}: {len(ids)} row(s) fail their checksum (rows {self.damaged[:5]}, videos "
                f"{ids[:3]}): the file changed after it was written; {fix}")

    @property
    def dataset(self) -> str:
        """The dataset folder's name, from where the shard lies (`<D>/features/` or
        `<D>/features/finetuned/fold-k/`); for a shard whose attributes do not name it."""
        p = self.path.resolve()
        return (p.parents[3] if self._in_fold_cache else p.parents[1]).name

    @property
    def _in_fold_cache(self) -> bool:
        return self.path.parent.name.startswith("fold-") and self.path.parent.parent.name == "finetuned"

    def repair(self, dataset: str) -> tuple[str, str]:
        """(the shard's path inside the dataset folder, the command that rewrites it and what it redoes).

        A fold cache (`features/finetuned/fold-k/`) is finetune's: extract would re-extract the frozen
        cache and leave it as it is (issue 29)."""
        p = self.path
        if self._in_fold_cache:
            return (f"{p.parent.parent.parent.name}/finetuned/{p.parent.name}/{p.name}",
                    f"`pipeline run finetune --dataset {dataset}` rewrites that fold's cache from its checkpoint "
                    "(no retraining)")
        return (f"{p.parent.name}/{p.name}",
                f"`pipeline run extract --dataset {dataset}` re-extracts only those videos")


def damaged_rows(features: np.ndarray, crcs: np.ndarray, offset: int = 0) -> list[int]:
    """Rows (numbered from `offset`) of an in-memory (n, T, D) block whose CRC differs from `crcs`."""
    return [offset + i for i, (row, crc) in enumerate(zip(features, crcs)) if row_crc32(row) != int(crc)]


def check_open_shard(f: h5py.File, path: Path) -> ShardCheck:
    ids = [v.decode() if isinstance(v, bytes) else str(v) for v in f["video_id"][:]]
    if CHECKSUM not in f:
        return ShardCheck(Path(path), ids, legacy=True)
    crcs = f[CHECKSUM][:]
    feats = f["features"]
    damaged: list[int] = []
    if len(crcs) != feats.shape[0]:
        return ShardCheck(Path(path), ids, list(range(feats.shape[0])))
    for start in range(0, feats.shape[0], BLOCK):
        damaged += damaged_rows(feats[start:start + BLOCK], crcs[start:start + BLOCK], start)
    return ShardCheck(Path(path), ids, damaged)


def check_shard(path: Path) -> ShardCheck:
    """Checksum every row of one shard. An unreadable file raises OSError: the caller decides."""
    with h5py.File(path, "r") as f:
        return check_open_shard(f, path)
