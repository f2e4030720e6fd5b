"""What a head stage needs from a dataset folder: the cache, joined by video id with the manifest
(folds, splits, apex spans) and failures.csv, and the subject-independent folds."""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from cache.reader import FeatureCache, load_cache
from pipeline.config import Config
from pipeline.errors import DatasetError
from pipeline.head.inputs import head_input
from pipeline.head.sampling import ClipSampler
from pipeline.head.train import Fold, make_folds
from pipeline.io import ManifestRow, read_failures, read_manifest
from pipeline.layout import layout_for


@dataclass
class TrainingData:
    cache: FeatureCache
    folds: list[Fold]
    protocol: str
    """`official folds`, `fixed split` or `StratifiedGroupKFold(k) by subject`."""
    apex: list[tuple[int, int] | None]
    """Per cache row, the annotated apex span in original frame numbers, when the manifest has one."""
    n_failed: int
    """Distinct video ids in failures.csv."""
    backbone_dim: int
    """The cached features' width, before `head_input` (twice as wide for the two-stream inputs)."""
    groups: np.ndarray
    """Per cache row, the fold key (`fold_groups`): what folds and `epoch_select: inner` keep together."""

    @property
    def class_names(self) -> list[str]:
        return self.cache.class_names


def load_training_data(cfg: Config, dataset: str) -> TrainingData:
    layout = layout_for(cfg, dataset)
    cache = load_cache(layout.features)
    unlabelled = int((cache.label < 0).sum())
    if unlabelled or not cache.class_names:
        # Stopped here, before any fold starts: a head cannot learn from videos without labels.
        raise DatasetError(f"dataset {dataset!r}: {unlabelled or len(cache)} of {len(cache)} cached videos have no "
                           "label (a `folder` dataset needs <root>/<label>/<video>; the manifest's `label` column "
                           "is empty), so there is nothing to train on. Label the videos, drop this dataset from "
                           "params.yaml `repro:`, or classify them with `pipeline predict VIDEO... --model RUN_DIR` "
                           "(RUN_DIR: the results folder of a trained dataset, e.g. results/demo).")
    backbone_dim = cache.feature_dim
    cache.features = head_input(cache.features, cfg.train_head, cache.subject, len(cache.class_names))
    rows = manifest_rows(cfg, dataset, cache.video_id)
    folds, protocol = protocol_folds(cfg, cache, rows)
    groups = fold_groups(cache.subject, rows)
    apex = [(r.apex_start, r.apex_end) if r is not None and r.apex_start is not None and r.apex_end is not None
            else None for r in rows]
    # A failure row may share its id with a cached video (a duplicate manifest row): count videos lost.
    n_failed = len({f.video_id for f in read_failures(layout.failures)} - set(cache.video_id))
    return TrainingData(cache, folds, protocol, apex, n_failed, backbone_dim, groups)


def manifest_rows(cfg: Config, dataset: str, video_ids: list[str]) -> list[ManifestRow | None]:
    """The manifest row of each cached video (None: not in the manifest)."""
    path = layout_for(cfg, dataset).manifest
    by_id = {r.video_id: r for r in read_manifest(path)} if path.exists() else {}
    return [by_id.get(v) for v in video_ids]


def fold_groups(subjects: list[str], rows: list[ManifestRow | None]) -> np.ndarray:
    """Per cache row, the key no fold splits: the manifest's `group` where it has one (related people), else
    the subject. Kept apart from the subject, which stays the person that `subject_norm` normalises."""
    return np.asarray([r.group if r is not None and r.group else s for s, r in zip(subjects, rows)])


def protocol_folds(cfg: Config, cache: FeatureCache, rows: list[ManifestRow | None]) -> tuple[list[Fold], str]:
    """The dataset's folds over the cache rows and the protocol's name; the one definition train-head,
    ablate and finetune share (reads `train_head.folds` and `train_head.seed`)."""
    folds_col = [r.fold if r is not None else None for r in rows]
    split_col = [r.split if r is not None else None for r in rows]
    th = cfg.train_head
    groups = fold_groups(cache.subject, rows)
    folds = make_folds(cache.label, groups, folds=folds_col, splits=split_col, k=th.folds, seed=th.seed)
    if all(f is not None for f in folds_col):
        protocol = "official folds"
    elif all(split_col):
        protocol = "fixed split"
    else:
        by = "group (manifest `group`, else subject)" if any(r is not None and r.group for r in rows) else "subject"
        protocol = f"StratifiedGroupKFold({th.folds}) by {by}, seed {th.seed}"
    return folds, protocol


def rich_clip_frames(cache: FeatureCache, rows: np.ndarray, rich_clip: np.ndarray, sampler: ClipSampler
                     ) -> tuple[np.ndarray, np.ndarray]:
    """First/last ORIGINAL frame number of each video's emotion-rich clip (test-time window)."""
    start, end = sampler.clip_span(rich_clip)  # cached frame positions
    return cache.frame_index[rows, start].astype(int), cache.frame_index[rows, end].astype(int)
