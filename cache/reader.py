"""Reading the cache: whole into memory (numpy or a torch device) for training, or lazily per video."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from cache.errors import PipelineError
from cache.store import CHECKSUM, list_shards, read_strings, row_crc32


def _attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return [x.decode() if isinstance(x, bytes) else x for x in v.tolist()]
    return v


@dataclass
class FeatureCache:
    """A dataset's cache loaded whole. Arrays are aligned on the first axis (one row per video)."""

    features: np.ndarray  # (N, T, D) float16
    label: np.ndarray  # (N,) int64, index into class_names
    subject: list[str]
    video_id: list[str]
    frame_index: np.ndarray  # (N, T) original frame numbers
    flags: np.ndarray  # (N, T) uint8
    class_names: list[str]
    attrs: dict = field(default_factory=dict)
    """Provenance of the first shard (backbone, weights, feature_dim, params, versions)."""

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[-1])

    def __len__(self) -> int:
        return len(self.video_id)

    def to_torch(self, device: str = "cpu"):
        """Features as one float16 tensor resident on `device`, as the head keeps them (half the memory:
        DFEW's cache is 1.2 GiB); cast each gathered batch to float32."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.features)).to(device)


def load_cache(features_dir: Path) -> FeatureCache:
    """Concatenate every shard under `features_dir` in name order."""
    shards = list_shards(features_dir)
    if not shards:
        raise PipelineError(f"no feature shards under {features_dir}: run `pipeline run extract` first")
    from cache.integrity import ShardCheck, damaged_rows

    parts: dict[str, list] = {k: [] for k in ("features", "label", "frame_index", "flags")}
    subject, video_id, attrs = [], [], {}
    bad: list[ShardCheck] = []
    for s in shards:
        with h5py.File(s, "r") as f:
            for k in parts:
                parts[k].append(f[k][:])
            ids = read_strings(f["video_id"])
            subject += read_strings(f["subject"])
            video_id += ids
            if not attrs:
                attrs = {k: _attr(v) for k, v in f.attrs.items()}
            # Checked on the rows just read (~0.04 ms a video): a damaged cache is never trained on.
            check = (ShardCheck(s, ids, legacy=True) if CHECKSUM not in f
                     else ShardCheck(s, ids, damaged_rows(parts["features"][-1], f[CHECKSUM][:])))
            if not check.ok:
                bad.append(check)
    if bad:
        raise PipelineError("the feature cache failed its integrity check:\n" +
                            "\n".join(f"  - {c.problem(str(attrs.get('dataset') or c.dataset))}" for c in bad))
    return FeatureCache(
        features=np.concatenate(parts["features"]), label=np.concatenate(parts["label"]),
        subject=subject, video_id=video_id, frame_index=np.concatenate(parts["frame_index"]),
        flags=np.concatenate(parts["flags"]), class_names=list(attrs.get("class_names", [])), attrs=attrs,
    )


class FeatureDataset:
    """A torch-style Dataset over the shards: `ds[i]` → (features (T, D) float32, label).

    HDF5 files are opened lazily inside each process (an open h5py file must never cross a
    fork, docs/reference.md §6), so this works with DataLoader workers.
    """

    def __init__(self, features_dir: Path):
        self.shards = list_shards(features_dir)
        self.index: list[tuple[int, int]] = []
        for si, s in enumerate(self.shards):
            with h5py.File(s, "r") as f:
                self.index += [(si, r) for r in range(f["features"].shape[0])]
        self._files: dict[int, h5py.File] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        si, row = self.index[i]
        f = self._files.get(si)
        if f is None:
            f = self._files[si] = h5py.File(self.shards[si], "r")
        feats = f["features"][row]
        if CHECKSUM not in f or row_crc32(feats) != int(f[CHECKSUM][row]):  # as load_cache: never train on damage
            from cache.integrity import check_open_shard

            check = check_open_shard(f, self.shards[si])
            dataset = str(_attr(f.attrs.get("dataset", "")) or check.dataset)
            raise PipelineError(check.problem(dataset))
        return feats.astype(np.float32), int(f["label"][row])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = {}
        return state
