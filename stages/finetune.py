"""finetune: adapt the extract backbone on each train-head fold's training videos, then cache its features.

Reads the crops extract keeps (`extract.keep_crops`) from `features/shard-*.h5`, the folds train-head uses
(`pipeline.head.data.protocol_folds`) and the manifest. Writes, per fold k,
`<data_root>/D/checkpoints/backbone-fold-k.pt` (adapted backbone + provenance) and
`<data_root>/D/features/finetuned/fold-k/` (every video's features from that backbone, extract's shard
format and provenance plus the fold and the checkpoint's hash), and `bad_crop` rows of failures.csv.
Not in the default `dvc repro` chain (registry `in_pipeline=False`): the demo and every dataset keep the
frozen features unless `train_head.features: finetuned` (docs/finetune.md).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import shutil

import h5py
import numpy as np
import torch
from tqdm import tqdm

from cache.integrity import check_open_shard
from cache.reader import load_cache
from cache.store import ShardRecord, list_shards, read_strings, write_index, write_shard
from pipeline.config import Config
from pipeline.errors import DatasetError, PipelineError
from pipeline.features import FeatureExtractor
from pipeline.finetune.crops import CropSet, load_crops
from pipeline.finetune.model import features_of, trainable_extractor
from pipeline.finetune.train import (FoldRun, check_no_leakage, ids_sha256, params_hash, run_params,
                                     save_checkpoint, train_fold, verify_checkpoint)
from pipeline.head.data import manifest_rows, protocol_folds
from pipeline.io import clean_stale_temporaries, sha256_file
from pipeline.layout import DatasetLayout, layout_for
from pipeline.runner import Outcome

log = logging.getLogger(__name__)


def _fold_cache_current(folder, sig: str, checkpoint_sha: str, test_sha: str) -> bool:
    """Written by this signature from this checkpoint for this fold, every row's checksum intact."""
    shards = list_shards(folder)
    if not shards or not (folder / "index.h5").exists():
        return False
    for s in shards:
        try:
            with h5py.File(s, "r") as f:
                if (f.attrs.get("signature") != sig or f.attrs.get("checkpoint_sha256") != checkpoint_sha
                        or f.attrs.get("fold_test_ids_sha256") != test_sha or not check_open_shard(f, s).ok):
                    return False
        except (OSError, KeyError):
            return False
    return True


def write_fold_cache(lay: DatasetLayout, fold: int, ext: FeatureExtractor, crops: CropSet, extra: dict,
                     batch_size: int) -> int:
    """Every decodable video's features from fold `fold`'s backbone, in the frozen shards' order and names."""
    out = lay.fold_features(fold)
    if out.exists():
        shutil.rmtree(out)  # stale or partial: a per-fold cache is rewritten whole, then indexed
    out.mkdir(parents=True)
    n = 0
    for s in list_shards(lay.features):
        with h5py.File(s, "r") as f:
            attrs = {k: v for k, v in f.attrs.items()}
            ids = read_strings(f["video_id"])
            subjects = read_strings(f["subject"])
            rows = [i for i, v in enumerate(ids) if v in crops.row]
            # extract.motion's columns follow the backbone's and do not depend on it: kept as the frozen cache has them.
            records = [ShardRecord(ids[i], int(f["label"][i]), subjects[i],
                                   np.concatenate([features_of(ext, crops.source.video(crops.row[ids[i]]), batch_size)
                                                   .numpy().astype(np.float16), f["features"][i][:, ext.dim:]], axis=1),
                                   f["frame_index"][i], f["flags"][i], f["landmarks"][i]) for i in rows]
        if records:
            write_shard(out / s.name, records, {**attrs, **extra})
            n += len(records)
    write_index(out)
    return n


def verify_outputs(cfg: Config, dataset: str, sig: str) -> bool:
    """The registry's `verify` hook, the runner's check before skipping: every fold's cache was written by this run's signature."""
    lay = layout_for(cfg, dataset)
    folders = sorted(lay.finetuned.glob("fold-*")) if lay.finetuned.exists() else []
    for folder in folders:
        for s in list_shards(folder):
            with h5py.File(s, "r") as f:
                if f.attrs.get("signature") != sig or not check_open_shard(f, s).ok:
                    return False
    return bool(folders)


def work(cfg: Config, dataset: str, *, sig: str, force: bool = False) -> Outcome:
    ft = cfg.finetune
    lay = layout_for(cfg, dataset)
    # finetune's own device and threads: extract's are for the frozen cache.
    ext = trainable_extractor(dataclasses.replace(cfg.extract, device=ft.device, threads=ft.threads))
    cache = load_cache(lay.features)  # labels, subjects, ids; integrity-checked
    if (cache.label < 0).any() or not cache.class_names:
        raise DatasetError(f"dataset {dataset!r}: {int((cache.label < 0).sum())} cached videos have no label; "
                           "fine-tuning needs every video labelled (as train-head does)")
    folds, protocol = protocol_folds(cfg, cache, manifest_rows(cfg, dataset, cache.video_id))
    crops, failures = load_crops(lay.features, dataset, "finetune", memory_gb=ft.crops_memory_gb)
    log.info("finetune %s: %s", dataset, crops.describe())
    for fl_ in failures:
        log.warning("%s: %s (dropped from fine-tuning and from the per-fold caches)", fl_.video_id, fl_.message)
    n_classes = len(cache.class_names)
    params = run_params(ft, ext, n_classes)
    ph = params_hash(params)
    start_state = copy.deepcopy(ext.module.state_dict())
    lay.backbones.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(lay.backbones)
    cache_row = {v: i for i, v in enumerate(cache.video_id)}
    per_fold = {}
    for fold in folds:
        train_ids = sorted(cache.video_id[i] for i in fold.train if cache.video_id[i] in crops.row)
        test_ids = [cache.video_id[i] for i in fold.test]
        run = FoldRun(fold.index, train_ids, params, ph, lay.backbone_resume(fold.index))
        if force:
            run.resume.unlink(missing_ok=True)
        ckpt_path = lay.backbone(fold.index)
        ck = None if force else verify_checkpoint(ckpt_path, run, ft.epochs)
        trained = ck is None
        if ck is None:
            ext.module.load_state_dict(start_state)
            rows = torch.as_tensor([crops.row[v] for v in train_ids], dtype=torch.long)
            labels = torch.as_tensor([int(cache.label[cache_row[v]]) for v in train_ids])
            log.info("finetune %s fold %d: %d training videos", dataset, fold.index, len(train_ids))
            with tqdm(total=ft.epochs, desc=f"finetune {dataset} fold {fold.index}", unit="epoch", leave=False) as bar:
                def progress(epoch: int, loss: float) -> None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}")

                model, history = train_fold(ext, crops.source.subset(rows), labels, ft, n_classes, run,
                                            on_epoch=progress)
            save_checkpoint(ckpt_path, model, ext, run, ft, history)
            run.resume.unlink(missing_ok=True)
            ck = verify_checkpoint(ckpt_path, run, ft.epochs)
            if ck is None:
                raise PipelineError(f"{ckpt_path} does not verify right after writing it (disk or filesystem problem?)")
        # The guard reads the ids back from the checkpoint file, not from this run's memory.
        check_no_leakage(ck["trained_ids"], test_ids, fold.index)
        ext.module.load_state_dict(ck["state_dict"])
        ck_sha, test_sha = sha256_file(ckpt_path), ids_sha256(test_ids)
        cached = not force and not trained and _fold_cache_current(lay.fold_features(fold.index), sig, ck_sha, test_sha)
        if not cached:
            extra = {"signature": sig, "params_hash": sig, "fold": fold.index, "checkpoint_sha256": ck_sha,
                     "fold_test_ids_sha256": test_sha, "trained_ids_sha256": ck["trained_ids_sha256"],
                     "weights": f"finetuned:fold-{fold.index}:{ext.weights}", "weights_sha256": ck_sha,
                     "starting_weights": ext.weights, "starting_weights_sha256": ext.weights_sha256,
                     "finetune": params, "protocol": protocol}
            write_fold_cache(lay, fold.index, ext, crops, extra, ft.batch_size)
        per_fold[str(fold.index)] = {"n_train": len(train_ids), "n_test": len(test_ids), "trained": trained,
                                     "final_loss": round(float(ck["history"][-1]), 4) if ck["history"] else None,
                                     "first_loss": round(float(ck["history"][0]), 4) if ck["history"] else None}
    for old in lay.finetuned.glob("fold-*"):  # a previous run with more folds
        if int(old.name.split("-")[1]) >= len(folds):
            shutil.rmtree(old)
    summary = {"stage": "finetune", "dataset": dataset, "backbone": ext.backbone, "mode": ft.mode, "protocol": protocol,
               "folds": len(folds), "videos": len(cache), "bad_crop": len(failures),
               "crops": "resident" if crops.resident else "streamed", "crops_pack": str(crops.pack.path),
               "per_fold": per_fold,
               "features": str(lay.finetuned), "checkpoints": str(lay.backbones)}
    return Outcome(summary, failures, replace_ids=list(cache.video_id), n_items=len(cache))
