"""train_head: the CEFLNet head trained on the feature cache, subject-independent cross-validation.

Inputs: `<data_root>/D/features/` (+ manifest.csv for folds/splits/apex spans, failures.csv).
Outputs under `<results_root>/D/`: metrics.json, predictions.csv, checkpoints/fold-<k>.pt, confusion.png,
activation_maps.png. Reported numbers are the LAST epoch's; the best-on-test epoch the authors and
peers report is kept apart in `best_epoch`, labelled as optimistic.
"""
from __future__ import annotations

import json

import numpy as np

from pipeline.config import Config
from pipeline.io import clean_stale_temporaries
from pipeline.head.data import TrainingData, load_training_data, rich_clip_frames
from pipeline.head.report import (ActivationExample, Prediction, mean_std, per_class_recall, plot_activation_maps,
                                  plot_confusion, war_uar, write_json, write_predictions)
from pipeline.head.sanity import ClipSpans, localisation, near_chance
from pipeline.head.train import FoldResult, cross_validate, head_params, resolve_device, save_head

STAGE = "train_head"
RESULT_FILES = ("metrics.json", "predictions.csv", "confusion.png", "activation_maps.png")
"""Written by every run, beside one `checkpoints/fold-<k>.pt` per fold."""
CHECKPOINTS = "checkpoints"


def summarize(data: TrainingData, results: list[FoldResult], cfg: Config, dataset: str, *,
              kind: str = "ceflnet") -> dict:
    """metrics.json from the fold results (percent; mean and std over folds), with the sanity numbers
    of `pipeline.head.sanity` beside them: chance, a per-fold near-chance flag, a linear probe on the
    same input and folds, and the clip-localisation baselines."""
    th, cache, names = cfg.train_head, data.cache, data.class_names
    counts = np.bincount(cache.label, minlength=len(names))
    majority = float(counts.max() / counts.sum())
    spans = ClipSpans.of(th.n_clips, th.test_offset, th.clip_stride, th.clip_len)
    per_fold, chosen, apex_rows = [], [], []
    for r in results:
        true = cache.label[r.test]
        war, uar = war_uar(true, r.pred)
        best = max(range(len(r.history)), key=lambda e: r.history[e][0])
        loc = localisation(cache.frame_index[r.test], [data.apex[i] for i in r.test], r.rich_clip, spans)
        chosen.append(r.rich_clip)
        apex_rows.append(r.test)
        fold = {"fold": r.fold, "n_train": int(len(data.folds[r.fold].train)), "n_test": int(len(r.test)),
                "war": round(war, 2), "uar": round(uar, 2),
                "near_chance": near_chance(int((true == r.pred).sum()), len(true), majority),
                "clip_localization": loc["overlap"] if loc else None,
                "clip_localization_strict": loc["strict"] if loc else None,
                "best_epoch": best + 1, "best_war": round(r.history[best][0], 2),
                "best_uar": round(r.history[best][1], 2)}
        if r.probe is not None:
            fold.update(probe_war=round(r.probe[0], 2), probe_uar=round(r.probe[1], 2))
        per_fold.append(fold)
    all_rows = np.concatenate([r.test for r in results])
    all_pred = np.concatenate([r.pred for r in results])
    war, war_std = mean_std([f["war"] for f in per_fold])
    uar, uar_std = mean_std([f["uar"] for f in per_fold])
    bwar, bwar_std = mean_std([f["best_war"] for f in per_fold])
    buar, buar_std = mean_std([f["best_uar"] for f in per_fold])
    rows = np.concatenate(apex_rows)
    loc = localisation(cache.frame_index[rows], [data.apex[i] for i in rows], np.concatenate(chosen), spans)
    weights = str(cache.attrs.get("weights", "unknown"))
    metrics = {
        "dataset": dataset,
        "head": kind, "variant": th.variant, "protocol": data.protocol, "epochs": th.epochs, "center": th.center,
        "war": war, "war_std": war_std, "uar": uar, "uar_std": uar_std,
        "per_class_recall": per_class_recall(cache.label[all_rows], all_pred, names),
        "n_videos": len(cache), "n_failed": data.n_failed, "n_folds": len(results),
        "chance_war": round(majority * 100, 2),
        "chance_uar": round(100 / len(names), 2),
        "n_folds_near_chance": sum(f["near_chance"] for f in per_fold),
        "clip_localization": loc,
        "backbone": str(cache.attrs.get("backbone", "unknown")), "weights": weights,
        "warning": ("FEATURES FROM A RANDOM-WEIGHT BACKBONE: these numbers test the plumbing and say nothing "
                    "about expression recognition (REFERENCE §9)") if weights.startswith("random") else None,
        "per_fold": per_fold,
        "best_epoch": {"note": "OPTIMISTIC: each fold's epoch chosen by its accuracy on its own test fold, as the "
                               "authors' main.py and most peers report; not a held-out estimate",
                       "war": bwar, "war_std": bwar_std, "uar": buar, "uar_std": buar_std,
                       "epochs": [f["best_epoch"] for f in per_fold]},
    }
    if all("probe_war" in f for f in per_fold):
        pwar, pwar_std = mean_std([f["probe_war"] for f in per_fold])
        puar, puar_std = mean_std([f["probe_uar"] for f in per_fold])
        metrics["linear_probe"] = {"war": pwar, "war_std": pwar_std, "uar": puar, "uar_std": puar_std,
                                   "what": "logistic regression on the head's input, mean-pooled over frames, "
                                           "same folds"}
    return metrics


def predictions(data: TrainingData, results: list[FoldResult], cfg: Config) -> list[Prediction]:
    th, cache, names = cfg.train_head, data.cache, data.class_names
    out = []
    for r in results:
        start, end = rich_clip_frames(cache, r.test, r.rich_clip, test_offset=th.test_offset,
                                      clip_stride=th.clip_stride, clip_len=th.clip_len)
        for j, row in enumerate(r.test):
            out.append(Prediction(cache.video_id[row], r.fold, names[cache.label[row]], names[r.pred[j]],
                                  dict(zip(names, r.probs[j].tolist())), int(start[j]), int(end[j])))
    return out


def activation_examples(data: TrainingData, rows, clip_scores, rich_clip, pred, cfg: Config, n: int
                        ) -> list[ActivationExample]:
    """The first `n` videos (by id) with their predicted class's clip scores over original frames."""
    th, cache, names = cfg.train_head, data.cache, data.class_names
    order = sorted(range(len(rows)), key=lambda j: cache.video_id[rows[j]])[:n]
    out = []
    for j in order:
        row = rows[j]
        spans = [(int(cache.frame_index[row, th.test_offset + c * th.clip_stride]),
                  int(cache.frame_index[row, th.test_offset + c * th.clip_stride + th.clip_len - 1]))
                 for c in range(th.n_clips)]
        out.append(ActivationExample(cache.video_id[row], names[cache.label[row]], names[pred[j]], spans,
                                     clip_scores[j, pred[j]], int(rich_clip[j]), data.apex[row]))
    return out


def run(cfg: Config, *, dataset: str | None = None) -> dict:
    """Train every fold, write the results folder, return metrics.json's content."""
    dataset = dataset or cfg.dataset
    data = load_training_data(cfg, dataset)
    device = resolve_device(cfg.train_head.device)
    results = cross_validate(cfg.train_head, data.cache.features, data.cache.label, data.folds,
                             len(data.class_names), device=device, desc=f"{STAGE} {dataset}",
                             subjects=np.asarray(data.cache.subject), probe=True)
    out = cfg.results_dir(dataset)
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / CHECKPOINTS):  # leftovers of a killed run
        clean_stale_temporaries(folder)
    # Everything `pipeline predict` needs to rebuild the features of a new video the same way.
    attrs = data.cache.attrs
    provenance = {**{k: attrs.get(k, "unknown") for k in ("backbone", "weights", "weights_sha256", "feature_dim",
                                                            "input_convention", "params_hash")},
                  "params": json.dumps(attrs.get("params", {}))}
    ckpt_dir = out / CHECKPOINTS
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for old in ckpt_dir.glob("fold-*.pt"):  # a previous run with more folds must not leave extra heads
        if int(old.stem.split("-")[1]) >= len(results):
            old.unlink()
    for r in results:
        save_head(ckpt_dir / f"fold-{r.fold}.pt", r.state_dict, cfg.train_head, kind="ceflnet",
                  in_dim=data.cache.feature_dim, class_names=data.class_names, fold=r.fold,
                  test_video_ids=[data.cache.video_id[i] for i in r.test], provenance=provenance)
    metrics = summarize(data, results, cfg, dataset)
    metrics["device"] = str(device)
    metrics["head_params"] = head_params(results[0].state_dict)
    write_predictions(out / "predictions.csv", predictions(data, results, cfg), data.class_names)
    rows = np.concatenate([r.test for r in results])
    pred = np.concatenate([r.pred for r in results])
    plot_confusion(out / "confusion.png", data.cache.label[rows], pred, data.class_names,
                   f"{dataset}: WAR {metrics['war']:.1f} / UAR {metrics['uar']:.1f} (last epoch)")
    examples = activation_examples(data, rows, np.concatenate([r.clip_scores for r in results]),
                                   np.concatenate([r.rich_clip for r in results]), pred, cfg,
                                   cfg.evaluate.n_activation_examples)
    plot_activation_maps(out / "activation_maps.png", examples)
    write_json(out / "metrics.json", metrics)
    return metrics
