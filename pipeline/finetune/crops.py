"""The aligned crops extract keeps (`extract.keep_crops`), decoded once into one resident uint8 tensor.

Each video's T JPEGs are decoded in one `torchvision.io.decode_jpeg` call (a list in, a list out: the
batched decoder, on the CPU here; on a GPU it takes `device=`). Small data fits in memory: the demo's 72
videos x 105 crops at 224 px are 1.1 GiB of uint8 (docs/finetune.md); a crops layout for data that does
not fit is the rest of issue 12's item 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torchvision.io import decode_jpeg

from cache.store import list_shards, read_strings
from pipeline.errors import PipelineError, VideoError
from pipeline.io import Failure


class NoCropsError(PipelineError):
    """The feature cache was extracted without `extract.keep_crops`: there is nothing to fine-tune on."""


def no_crops_message(dataset: str, shard: Path) -> str:
    return (f"{shard} holds no crops: dataset {dataset!r} was extracted without extract.keep_crops, and fine-tuning "
            f"reads the aligned crops. Add them with\n  pipeline run extract --dataset {dataset} --keep-crops\n"
            "(re-extracts every video, keeping its crops) and set `extract.keep_crops: true` in params.yaml so later "
            f"runs keep them; or run `pipeline run finetune --dataset {dataset} --keep-crops`, which brings extract "
            "up to date first")


@dataclass
class CropSet:
    """Decoded crops of the videos that decoded cleanly, one row per video."""

    video_id: list[str]
    crops: torch.Tensor  # (N, T, 3, S, S) uint8 RGB
    row: dict[str, int]
    """video id -> row of `crops`."""

    def __len__(self) -> int:
        return len(self.video_id)


def decode_video(jpegs: list[np.ndarray]) -> torch.Tensor:
    """(T, 3, S, S) uint8 from T JPEG byte arrays in one batched call; VideoError `bad_crop` names the frame."""
    data = [torch.from_numpy(np.asarray(j, dtype=np.uint8)) for j in jpegs]
    try:
        images = decode_jpeg(data)
    except RuntimeError:
        # The batched call says only that one image failed: find which, on this rare path alone.
        for t, d in enumerate(data):
            try:
                decode_jpeg(d)
            except RuntimeError as err:
                raise VideoError("bad_crop", f"crop {t} does not decode as JPEG ({str(err).splitlines()[0]})") from err
        raise
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) != 1 or next(iter(shapes))[0] != 3:
        raise VideoError("bad_crop", f"crops of different shapes or not RGB: {sorted(shapes)}")
    return torch.stack(images)


def load_crops(features_dir: Path, dataset: str, stage: str) -> tuple[CropSet, list[Failure]]:
    """Every cached video's crops, shards in name order; videos with a crop that fails go to the failures.

    Decoded into one tensor allocated once (the whole set at its final size, no stacking copy)."""
    shards = list_shards(features_dir)
    if not shards:
        hint = f"pipeline run extract --dataset {dataset} --keep-crops"
        raise PipelineError(f"no feature shards under {features_dir}: run `{hint}` first")
    total = 0
    for s in shards:  # every shard checked before a single crop is decoded
        with h5py.File(s, "r") as f:
            if "crops" not in f:
                raise NoCropsError(no_crops_message(dataset, s))
            total += f["video_id"].shape[0]
    failures: list[Failure] = []
    ids: list[str] = []
    crops: torch.Tensor | None = None
    for s in shards:
        with h5py.File(s, "r") as f:
            vids = read_strings(f["video_id"])
            for i, vid in enumerate(vids):
                try:
                    video = decode_video(list(f["crops"][i]))
                    if crops is None:
                        crops = torch.empty((total, *video.shape), dtype=torch.uint8)
                    elif video.shape != crops.shape[1:]:  # a video cropped at another size: a stale shard mixed in
                        raise VideoError("bad_crop", f"crops {tuple(video.shape)}, the cache's are "
                                                     f"{tuple(crops.shape[1:])}")
                except VideoError as err:
                    failures.append(Failure(vid, stage, err.kind, err.message))
                    continue
                crops[len(ids)] = video
                ids.append(vid)
    crops = crops[:len(ids)] if crops is not None else torch.zeros((0, 0, 3, 0, 0), dtype=torch.uint8)
    return CropSet(ids, crops, {v: i for i, v in enumerate(ids)}), failures
