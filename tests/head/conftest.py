"""Synthetic feature caches for the head tests: written with the real shard writer, read by the real reader."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cache.store import ShardRecord, write_shard
from pipeline.io import Failure, ManifestRow, update_failures, write_manifest
from tests.conftest import write_params

CLASSES = ["anger", "happiness", "surprise"]


def write_synthetic_dataset(data_root: Path, name: str = "synth", *, n_videos: int = 36, n_subjects: int = 12,
                            dim: int = 32, n_frames: int = 105, signal_len: int = 8, signal: float = 1.0,
                            seed: int = 0, failed: tuple[str, ...] = ("broken_a", "broken_b"),
                            classes: list[str] = CLASSES, weights: str = "random") -> dict:
    """`<data_root>/<name>/{manifest.csv,failures.csv,features/shard-*.h5}`.

    Every frame is unit Gaussian noise except `signal_len` consecutive frames at a random position
    where the class prototype (a random unit-ish direction per class) is added: the class lives in
    one short episode, like an expression apex. The apex span is recorded in ORIGINAL frame numbers
    (frame_index = 2 t + 7, as if the video were twice as long and trimmed).
    """
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((len(classes), dim)) * signal
    folder = data_root / name
    records, rows, spans = [], [], {}
    for v in range(n_videos):
        label = v % len(classes)
        subject = f"S{v % n_subjects:03d}"
        vid = f"{subject}/clip{v:03d}"
        feats = rng.standard_normal((n_frames, dim)).astype(np.float32)
        start = int(rng.integers(15, 15 + 75 - signal_len))  # inside the test window
        feats[start:start + signal_len] += protos[label]
        frame_index = 2 * np.arange(n_frames) + 7
        records.append(ShardRecord(vid, label, subject, feats.astype(np.float16), frame_index,
                                   np.ones(n_frames, np.uint8), np.zeros((n_frames, 5, 2), np.float32)))
        spans[vid] = (int(frame_index[start]), int(frame_index[start + signal_len - 1]))
        rows.append(ManifestRow(video_id=vid, path=f"{vid}.mp4", label=classes[label], subject=subject,
                                apex_start=spans[vid][0], apex_end=spans[vid][1], n_frames=2 * n_frames + 7))
    for f in failed:
        rows.append(ManifestRow(video_id=f, path=f"{f}.mp4", label=classes[0], subject="S999", status="no_face"))
    attrs = {"class_names": list(classes), "backbone": "synthetic", "feature_dim": dim, "weights": weights}
    half = n_videos // 2  # two shards: the reader must concatenate them in order
    write_shard(folder / "features" / "shard-00000.h5", records[:half], attrs)
    write_shard(folder / "features" / "shard-00001.h5", records[half:], attrs)
    write_manifest(rows, folder / "manifest.csv")
    # Two failure rows for one video: n_failed counts distinct ids.
    update_failures(folder / "failures.csv", "detect", [Failure(f, "detect", "no_face", "x") for f in failed])
    if failed:
        update_failures(folder / "failures.csv", "extract", [Failure(failed[0], "extract", "io", "y")])
    return {"folder": folder, "spans": spans, "protos": protos}


def tiny_params(tmp_path: Path, dataset: str = "synth", **train_head) -> Path:
    """params.yaml with only a `folder` dataset (the repo's lists adapters other engineers own)."""
    th = {"folds": 3, "epochs": 3, "batch_size": 8, "hidden": 32, "warmup_epochs": 1, "device": "cpu", **train_head}
    return write_params(tmp_path, {dataset: {"adapter": "folder", "root": str(tmp_path / "raw")}}, dataset,
                        train_head=th, evaluate={"n_activation_examples": 2, "tsne": True})
