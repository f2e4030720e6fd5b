"""`train_head.features: finetuned`: fold k's head trains and tests on fold k's adapted-backbone cache.

finetune (stages/finetune.py) writes `features/finetuned/fold-<k>/` (`DatasetLayout.fold_features`) from a backbone trained on fold k's
training videos only. Before a head uses it, each per-fold cache must have been made for the very fold
train-head computes now (the sha256 of its test ids, recorded by finetune): with other folds (another
`train_head.folds` or seed, a changed manifest) fold k's backbone may have trained on fold k's test videos.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Sequence

import h5py
import numpy as np

from cache.reader import load_cache
from cache.store import list_shards
from pipeline.errors import PipelineError
from pipeline.head.inputs import head_input
from pipeline.head.train import Fold
from pipeline.layout import DatasetLayout, layout_for

log = logging.getLogger(__name__)


def ids_sha256(ids: Sequence[str]) -> str:
    """Of a set of video ids (order-free): how finetune and train-head agree on a fold's videos."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def fingerprint(layout: DatasetLayout) -> str:
    """What the per-fold caches hold (checkpoint hashes, folds, signatures): a rerun of finetune makes
    train-head stale. Missing caches give a fingerprint too; `load_fold_features` then says what to run."""
    parts = []
    folders = sorted(layout.finetuned.glob("fold-*"))
    for folder in folders:
        for s in list_shards(folder):
            with h5py.File(s, "r") as f:
                a = f.attrs
                parts.append(f"{folder.name}:{s.name}:{a.get('checkpoint_sha256')}:{a.get('fold_test_ids_sha256')}:{a.get('signature')}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_fold_features(layout: DatasetLayout, dataset: str, video_ids: Sequence[str], folds: Sequence[Fold],
                       th, subjects: Sequence[str], n_classes: int) -> tuple[dict[int, np.ndarray], list[Fold]]:
    """Per fold, an array aligned with the frozen cache's rows (`video_ids`) from that fold's cache, centred
    like the frozen one; and the folds without the videos a per-fold cache lacks (finetune's `bad_crop`)."""
    out: dict[int, np.ndarray] = {}
    kept: list[Fold] = []
    row_of = {v: i for i, v in enumerate(video_ids)}
    for fold in folds:
        folder = layout.fold_features(fold.index)
        if not list_shards(folder):
            raise PipelineError(f"train_head.features=finetuned but {folder} holds no features: run "
                                f"`pipeline run finetune --dataset {dataset}` first")
        cache = load_cache(folder)  # integrity-checked
        test_ids = [video_ids[i] for i in fold.test]
        if cache.attrs.get("fold") != fold.index or cache.attrs.get("fold_test_ids_sha256") != ids_sha256(test_ids):
            raise PipelineError(f"{folder} was made for other folds than train-head's fold {fold.index} (train_head."
                                f"folds or seed, or the manifest, changed since): its backbone may have trained on "
                                f"this fold's test videos. Rerun `pipeline run finetune --dataset {dataset}`")
        feats = np.zeros((len(video_ids), *cache.features.shape[1:]), cache.features.dtype)
        present = np.zeros(len(video_ids), bool)
        for j, v in enumerate(cache.video_id):
            if v in row_of:
                feats[row_of[v]] = cache.features[j]
                present[row_of[v]] = True
        if not present.all():
            log.warning("fold %d: %d videos missing from %s (finetune failures.csv rows) left out of this fold",
                        fold.index, int((~present).sum()), folder)
        # Rows left out are zeros that no fold index reaches.
        out[fold.index] = head_input(feats, th, subjects, n_classes, present)
        kept.append(Fold(fold.index, fold.train[present[fold.train]], fold.test[present[fold.test]]))
    return out, kept


def input_fingerprint(cfg, dataset: str) -> str:
    """A stage's extra signature input (train-head, ablate): with `train_head.features: finetuned`, what the
    per-fold caches hold, so a rerun of finetune makes the stage stale. Empty for the frozen cache
    (extract's signature, upstream, covers it)."""
    return fingerprint(layout_for(cfg, dataset)) if cfg.train_head.features == "finetuned" else ""


def fold_features_for(cfg, dataset: str, data) -> dict[int, np.ndarray] | None:
    """`cross_validate`'s `fold_features` for a stage's TrainingData: None for the frozen cache; with
    `features: finetuned` fold k's rows from fold k's cache, and `data.folds` without the videos a per-fold
    cache lacks."""
    if cfg.train_head.features != "finetuned":
        return None
    feats, data.folds = load_fold_features(layout_for(cfg, dataset), dataset, data.cache.video_id, data.folds,
                                           cfg.train_head, data.cache.subject, len(data.class_names))
    return feats
