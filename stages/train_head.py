"""train_head: the CEFLNet head trained on the feature cache, subject-independent cross-validation.

Inputs: `<data_root>/D/features/` (+ manifest.csv for folds/splits/apex spans, failures.csv).
Outputs under `<results_root>/D/`:

- `metrics.json`: numbers only (what `dvc metrics diff` / `dvc exp show` compare), `per_fold` keyed
  by fold; the last epoch's scores, the best-on-test epoch the authors and peers report apart in
  `best_epoch` (optimistic, see provenance.json's note), and the sanity numbers of
  `pipeline.head.sanity` (chance, near-chance folds as 0/1, the linear probe, clip-localisation
  baselines);
- `provenance.json`: the text — dataset, backbone, weights, protocol, center, device, notes — and the
  effective parameters of the run (after the dataset's overrides);
- `history/fold-<k>.csv` (per-epoch train/test loss and scores) and `training_curves.png`;
- `predictions.csv` and `checkpoints/fold-<k>.pt`.

The confusion matrix and activation maps are evaluate's (one writer per output).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from pipeline.config import Config
from pipeline.head.data import TrainingData, load_training_data, rich_clip_frames
from pipeline.head.finetuned import fold_features_for, input_fingerprint  # noqa: F401 (the registry's fingerprint hook)
from pipeline.head.inputs import normalised_people
from pipeline.head.report import (Prediction, mean_std, per_class_recall, plot_training_curves, war_uar,
                                  write_history, write_json, write_predictions)
from pipeline.head.sampling import ClipSampler
from pipeline.head.sanity import ClipSpans, localisation, near_chance
from pipeline.head.train import FoldResult, cross_validate, head_params, save_head
from pipeline.io import clean_stale_temporaries
from pipeline.layout import layout_for, results_for
from pipeline.precision import resolve_device
from pipeline.runner import Outcome

BEST_EPOCH_NOTE = ("OPTIMISTIC: each fold's epoch chosen by its accuracy on its own test fold, as the authors' "
                   "main.py and most peers report; not a held-out estimate; every epoch scored on the test_offset "
                   "window alone, by the head alone")
NOTES = {
    "numbers": "last epoch of each fold, mean ± std over folds (sample std); with train_head.test_windows all, a "
               "test video's class probabilities averaged over every window start training draws from; with "
               "train_head.fusion probe, the mean of those and the linear probe's",
    "best_epoch": BEST_EPOCH_NOTE,
    "near_chance": "1 when a fold's correct count is within binomial noise of always answering the majority "
                   "class (one-sided binomial test, p > 0.05); n_folds_near_chance counts them",
    "linear_probe": "logistic regression on the head's input, mean-pooled over frames, same folds",
    "clip_localization": "overlap: the emotion-rich clip meets the annotated apex span (Table 7's criterion); "
                         "strict: the clip's centre frame lies inside it; random_*: a uniformly random clip "
                         "(expected), centre_*: the centre clip",
}


def summarize(data: TrainingData, results: list[FoldResult], cfg: Config) -> dict:
    """metrics.json from the fold results: numbers only (percent; mean and std over folds), with the
    sanity numbers of `pipeline.head.sanity` beside them.

    New numbers go in as plain keys (top level for the run, `per_fold[k]` for a fold); text goes
    to provenance.json, so `dvc metrics` and `dvc exp show` stay readable."""
    th, cache, names = cfg.train_head, data.cache, data.class_names
    counts = np.bincount(cache.label, minlength=len(names))
    majority = float(counts.max() / counts.sum())
    spans = ClipSpans.of(th.n_clips, th.test_offset, th.clip_stride, th.clip_len)
    per_fold, chosen, apex_rows = {}, [], []
    for r in results:
        true = cache.label[r.test]
        war, uar = war_uar(true, r.pred)
        best = max(r.history, key=lambda e: e.test_war)
        loc = localisation(cache.frame_index[r.test], [data.apex[i] for i in r.test], r.rich_clip, spans)
        chosen.append(r.rich_clip)
        apex_rows.append(r.test)
        fold = {"n_train": int(len(data.folds[r.fold].train)), "n_test": int(len(r.test)),
                "war": round(war, 2), "uar": round(uar, 2),
                "near_chance": int(near_chance(int((true == r.pred).sum()), len(true), majority)),
                **({"clip_localization": loc["overlap"], "clip_localization_strict": loc["strict"]} if loc else {}),
                "best_epoch": best.epoch, "best_war": round(best.test_war, 2), "best_uar": round(best.test_uar, 2),
                "epochs": len(r.history)}  # trained epochs: fewer than train_head.epochs with epoch_select: inner
        if r.held_out:
            fold["held_out_loss"] = round(min(e.test_loss for e in r.held_out), 4)
        if r.probe is not None:
            fold.update(probe_war=round(r.probe[0], 2), probe_uar=round(r.probe[1], 2))
        per_fold[str(r.fold)] = fold
    folds = list(per_fold.values())
    all_rows = np.concatenate([r.test for r in results])
    all_pred = np.concatenate([r.pred for r in results])
    war, war_std = mean_std([f["war"] for f in folds])
    uar, uar_std = mean_std([f["uar"] for f in folds])
    bwar, bwar_std = mean_std([f["best_war"] for f in folds])
    buar, buar_std = mean_std([f["best_uar"] for f in folds])
    rows = np.concatenate(apex_rows)
    loc = localisation(cache.frame_index[rows], [data.apex[i] for i in rows], np.concatenate(chosen), spans)
    metrics = {
        "war": war, "war_std": war_std, "uar": uar, "uar_std": uar_std,
        "chance_war": round(majority * 100, 2),
        "chance_uar": round(100 / len(names), 2),
        "n_folds_near_chance": sum(f["near_chance"] for f in folds),
        "epochs": th.epochs, "epochs_trained": round(float(np.mean([f["epochs"] for f in folds])), 1),
        "n_videos": len(cache), "n_failed": data.n_failed, "n_folds": len(results),
        "per_class_recall": per_class_recall(cache.label[all_rows], all_pred, names),
        **({"clip_localization": loc} if loc else {}),
        "per_fold": per_fold,
        "best_epoch": {"war": bwar, "war_std": bwar_std, "uar": buar, "uar_std": buar_std},
    }
    if all("probe_war" in f for f in folds):
        pwar, pwar_std = mean_std([f["probe_war"] for f in folds])
        puar, puar_std = mean_std([f["probe_uar"] for f in folds])
        metrics["linear_probe"] = {"war": pwar, "war_std": pwar_std, "uar": puar, "uar_std": puar_std}
    return metrics


def provenance(data: TrainingData, cfg: Config, dataset: str, *, kind: str = "ceflnet") -> dict:
    """The run's text facts and effective parameters (provenance.json)."""
    attrs = data.cache.attrs
    weights = str(attrs.get("weights", "unknown"))
    ds = cfg.dataset_config(dataset)
    return {
        "dataset": dataset, "head": kind, "variant": cfg.train_head.variant, "protocol": data.protocol,
        "center": cfg.train_head.center, "class_names": list(data.class_names),
        "subject_norm": (f"{len(normalised_people(data.cache.subject, len(data.class_names)))} of "
                         f"{len(set(data.cache.subject))} people normalised (at least {len(data.class_names)} videos "
                         "each)") if cfg.train_head.subject_norm else "off",
        "backbone": str(attrs.get("backbone", "unknown")), "weights": weights,
        "warning": ("FEATURES FROM A RANDOM-WEIGHT BACKBONE: these numbers test the plumbing and say nothing "
                    "about expression recognition (docs/reference.md §9)") if weights.startswith("random") else None,
        "notes": NOTES,
        "params": {"train_head": dataclasses.asdict(cfg.train_head),
                   "family": ds.family_name(), "dataset_overrides": dict(cfg.overrides_of(dataset)),
                   "features": json.loads(attrs["params"]) if isinstance(attrs.get("params"), str)
                   else attrs.get("params", {})},
    }


def predictions(data: TrainingData, results: list[FoldResult], cfg: Config) -> list[Prediction]:
    th, cache, names = cfg.train_head, data.cache, data.class_names
    sampler = ClipSampler.from_config(th, cache.frame_index.shape[1])
    out = []
    for r in results:
        start, end = rich_clip_frames(cache, r.test, r.rich_clip, sampler)
        for j, row in enumerate(r.test):
            out.append(Prediction(cache.video_id[row], r.fold, names[cache.label[row]], names[r.pred[j]],
                                  dict(zip(names, r.probs[j].tolist())), int(start[j]), int(end[j])))
    return out


def _replace_per_fold(folder, pattern: str, keep: int) -> None:
    """A previous run with more folds must not leave extra files behind."""
    for old in folder.glob(pattern):
        if int(old.stem.split("-")[1]) >= keep:
            old.unlink()


def backbone_of_fold(cfg: Config, dataset: str, fold: int) -> dict:
    """With `features: finetuned`, where fold k's adapted backbone is and its sha256: `pipeline predict`
    feeds head k the features of that backbone, as training did. Empty for the frozen cache."""
    if cfg.train_head.features != "finetuned":
        return {}
    import h5py

    from cache.store import list_shards
    lay = layout_for(cfg, dataset)
    with h5py.File(list_shards(lay.fold_features(fold))[0], "r") as f:  # the hash the fold's features were made with
        sha = str(f.attrs.get("checkpoint_sha256", ""))
    return {"backbone_checkpoint": str(lay.backbone(fold).resolve()), "backbone_checkpoint_sha256": sha}


def work(cfg: Config, dataset: str, *, sig: str, force: bool = False) -> Outcome:
    data = load_training_data(cfg, dataset)
    device = resolve_device(cfg.train_head.device, "train_head.device")
    fold_features = fold_features_for(cfg, dataset, data)
    results = cross_validate(cfg.train_head, data.cache.features, data.cache.label, data.folds,
                             len(data.class_names), device=device, desc=f"train-head {dataset}",
                             subjects=np.asarray(data.cache.subject), probe=True, fold_features=fold_features,
                             groups=data.groups)
    res = results_for(cfg, dataset)
    ckpt_dir, hist_dir = res.heads, res.history
    for folder in (res.root, ckpt_dir, hist_dir):  # leftovers of a killed run
        folder.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(folder)
    _replace_per_fold(ckpt_dir, "fold-*.pt", len(results))
    _replace_per_fold(hist_dir, "fold-*.csv", len(results))
    # Everything `pipeline predict` needs to rebuild the features of a new video the same way.
    attrs = data.cache.attrs
    ckpt_provenance = {**{k: attrs.get(k, "unknown") for k in ("backbone", "weights", "weights_sha256", "feature_dim",
                                                                 "input_convention", "params_hash")},
                       "params": json.dumps(attrs.get("params", {})), "features": cfg.train_head.features}
    for r in results:
        save_head(res.head(r.fold), r.state_dict, cfg.train_head, kind="ceflnet",
                  in_dim=data.backbone_dim, class_names=data.class_names, fold=r.fold,
                  test_video_ids=[data.cache.video_id[i] for i in r.test],
                  provenance={**ckpt_provenance, **backbone_of_fold(cfg, dataset, r.fold)})
        write_history(res.fold_history(r.fold), r.history)
    metrics = summarize(data, results, cfg)
    metrics["head_params"] = head_params(results[0].state_dict)
    write_predictions(res.predictions, predictions(data, results, cfg), data.class_names)
    plot_training_curves(res.training_curves, {r.fold: r.history for r in results})
    write_json(res.provenance, {**provenance(data, cfg, dataset), "device": str(device)})
    write_json(res.metrics, metrics)
    return Outcome(metrics)
