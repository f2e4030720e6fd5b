"""evaluate: rebuild the report from predictions.csv and the fold checkpoints, without retraining.

Writes report.md (per-fold table, mean ± std, per-class recall, chance levels, provenance),
confusion.png, activation_maps.png and tsne.png (video embeddings of every test video from its own
fold's head, coloured by class) under `<results_root>/D/`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from cache.reader import load_cache
from pipeline.config import Config, TrainHeadConfig
from pipeline.errors import UNREADABLE_CHECKPOINT, PipelineError
from pipeline.head.data import TrainingData, fold_groups
from pipeline.head.inputs import head_input
from pipeline.head.report import (ActivationExample, mean_std, per_class_recall, plot_activation_maps, plot_confusion,
                                  plot_tsne, read_predictions, war_uar, write_text)
from pipeline.head.sampling import ClipSampler
from pipeline.head.sanity import sign_test
from pipeline.head.train import autocast, load_head, predict
from pipeline.io import read_failures, read_manifest
from pipeline.layout import layout_for, results_for
from pipeline.runner import Outcome, scoped



def activation_examples(data: TrainingData, rows, clip_scores, rich_clip, pred, cfg: Config, n: int,
                        rich_map=None) -> list[ActivationExample]:
    """The first `n` videos (by id) with their predicted class's clip scores over original frames, and the map the
    emotion-rich clip was read from (`rich_map`) where that is not the head's (`train_head.rich_clip: probe`)."""
    th, cache, names = cfg.train_head, data.cache, data.class_names
    sampler = ClipSampler.from_config(th, cache.frame_index.shape[1])
    order = sorted(range(len(rows)), key=lambda j: cache.video_id[rows[j]])[:n]
    out = []
    for j in order:
        row = rows[j]
        spans = [tuple(int(cache.frame_index[row, p]) for p in sampler.clip_span(c)) for c in range(th.n_clips)]
        out.append(ActivationExample(cache.video_id[row], names[cache.label[row]], names[pred[j]], spans,
                                     clip_scores[j, pred[j]], int(rich_clip[j]), data.apex[row],
                                     None if rich_map is None else rich_map[j, pred[j]]))
    return out


def _train_hint(dataset: str) -> str:
    return f"`pipeline run train-head --dataset {dataset}`"


def checkpoints(cfg: Config, dataset: str) -> list[Path]:
    folder = results_for(cfg, dataset).heads
    return sorted(folder.glob("fold-*.pt"), key=lambda p: int(p.stem.split("-")[1]))


def check_inputs(cfg: Config, dataset: str) -> None:
    """The registry's `check_inputs` hook: everything evaluate reads, checked before any work (and before
    `pipeline run` would bring upstream stages up to date); raises one PipelineError naming the fix."""
    res = results_for(cfg, dataset)
    missing = [str(p) for p in (res.predictions,) if not p.exists()]
    if not checkpoints(cfg, dataset):
        missing.append(f"{res.heads}/fold-*.pt")
    if not list(layout_for(cfg, dataset).features.glob("shard-*.h5")):
        missing.append(str(layout_for(cfg, dataset).features / "shard-*.h5"))
    if missing:
        raise PipelineError(f"evaluate needs {', '.join(missing)}: not found; run {_train_hint(dataset)} first")


def _load_heads(cfg: Config, dataset: str) -> list:
    heads = []
    for path in checkpoints(cfg, dataset):
        try:
            heads.append(load_head(path))
        except UNREADABLE_CHECKPOINT as err:
            raise PipelineError(f"cannot read {path} ({type(err).__name__}: {err}); retrain with "
                                f"{_train_hint(dataset)}") from err
    return heads


def _head_features(head, data: TrainingData, dataset: str, lay) -> torch.Tensor:
    """What `head` was trained and tested on: the frozen cache, or with `features: finetuned` its own fold's
    per-fold cache (aligned with the frozen rows, centred the same way), so the figures show that head's input."""
    if head.provenance.get("features") != "finetuned":
        return torch.from_numpy(data.cache.features)
    folder = lay.fold_features(head.fold)
    if not list(folder.glob("shard-*.h5")):
        raise PipelineError(f"fold-{head.fold}.pt was trained on {folder}, which holds no features now; rerun "
                            f"`pipeline run finetune --dataset {dataset}` and {_train_hint(dataset)}")
    cache = load_cache(folder)
    row = {v: i for i, v in enumerate(cache.video_id)}
    raw = np.zeros((len(data.cache.video_id), *cache.features.shape[1:]), cache.features.dtype)
    present = np.array([v in row for v in data.cache.video_id])  # finetune dropped the others (bad_crop): in no fold
    raw[present] = cache.features[[row[v] for v in data.cache.video_id if v in row]]
    return torch.from_numpy(head_input(raw, head.config, data.cache.subject, len(data.class_names), present))


def evaluation_data(cfg: Config, dataset: str, head_cfg) -> TrainingData:
    """The cache as the checkpoints' run saw it (their own `center`), apex spans and failure count;
    the folds are the checkpoints' (their test video ids), never recomputed from train_head.folds."""
    lay = layout_for(cfg, dataset)
    cache = load_cache(lay.features)
    backbone_dim = cache.feature_dim
    cache.features = head_input(cache.features, head_cfg, cache.subject, len(cache.class_names))
    by_id = {r.video_id: r for r in read_manifest(lay.manifest)} if lay.manifest.exists() else {}
    rows = [by_id.get(v) for v in cache.video_id]
    apex = [(r.apex_start, r.apex_end) if r is not None and r.apex_start is not None and r.apex_end is not None
            else None for r in rows]
    n_failed = len({f.video_id for f in read_failures(lay.failures)} - set(cache.video_id))
    return TrainingData(cache, [], "as recorded by train-head", apex, n_failed, backbone_dim,
                        fold_groups(cache.subject, rows))


def _fold_outputs(heads: list, data: TrainingData, dataset: str, lay) -> dict[str, np.ndarray]:
    """Re-run every fold checkpoint on its own test videos (and its own features): embeddings and clip maps."""
    row_of = {v: i for i, v in enumerate(data.cache.video_id)}
    parts: dict[str, list] = {"rows": [], "probs": [], "rich_clip": [], "clip_scores": [], "embedding": [],
                              "rich_map": []}
    for head in heads:
        feats = _head_features(head, data, dataset, lay)
        missing = [v for v in head.test_video_ids if v not in row_of]
        if missing:
            raise PipelineError(f"fold-{head.fold}.pt: {len(missing)} test videos are no longer in the cache "
                                f"(e.g. {missing[0]}); retrain with {_train_hint(dataset)}")
        rows = torch.tensor([row_of[v] for v in head.test_video_ids], dtype=torch.long)
        sampler = ClipSampler.from_config(head.config, feats.shape[1])
        with autocast(torch.device("cpu"), head.config.precision):
            out = predict(head.model, feats, rows, sampler)
        parts["rows"].append(rows.numpy())
        for k in ("probs", "rich_clip", "clip_scores", "embedding", "rich_map"):
            parts[k].append(out[k].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def head_against_probe(by_fold: dict, fused: bool = False) -> str | None:
    """The head's WAR minus the probe's, fold by fold, with a two-sided sign test over the folds that differ: with
    few training people a linear probe can beat the paper's head (bench/results/head_gap.md), and two means ±
    std do not say which side each fold falls on. `fused`: the WAR is the head's averaged with that probe's
    (`train_head.fusion: probe`), so the line says what the mean adds over the probe alone."""
    pairs = [(f["war"], f["probe_war"]) for f in by_fold.values() if "probe_war" in f]
    if not pairs:
        return None
    diff = [h - p for h, p in pairs]
    ahead, behind, level, p = sign_test(diff)
    head = "the head fused with the probe" if fused else "the head"
    verdict = (f"no difference beyond noise (sign test p = {p:.2f})" if p >= 0.05 else
               f"{head} is ahead (sign test p = {p:.3f})" if ahead > behind else
               f"the probe is ahead (sign test p = {p:.3f}): {head} adds nothing over it on this data "
               "(docs/head.md, *Why the head stays under the probe*)")
    return (f"{head[0].upper()}{head[1:]} minus the probe alone, fold by fold: {np.mean(diff):+.2f} points on average; "
            f"ahead on {ahead} of {len(diff)} folds, behind on {behind}, level on {level}: {verdict}.")


def _scoring_line(cfg: TrainHeadConfig) -> str:
    """How a test video was scored: `test_windows` and `fusion` of the checkpoints (load_head reads older ones as
    fixed, none)."""
    line = ("each test video's class probabilities averaged over every window start training draws from "
            "(`train_head.test_windows: all`; the per-epoch history scores the head alone on the paper's one window)"
            if cfg.test_windows == "all" else
            "each test video scored on the paper's one test window (`train_head.test_windows: fixed`)")
    if cfg.fusion == "probe":
        line += (f"; the WAR and UAR columns are the head's class probabilities mixed with the linear probe's, "
                 f"{1 - cfg.fusion_weight:g} : {cfg.fusion_weight:g} (`train_head.fusion: probe`, `fusion_weight`, docs/head.md)")
    return line + "."


def report_markdown(dataset: str, per_fold: list[dict], war: tuple, uar: tuple, recall: dict, metrics: dict,
                    scoring: TrainHeadConfig) -> str:
    fused = scoring.fusion == "probe"
    lines = [f"# {dataset}: CEFLNet head ({metrics.get('variant', '?')} variant)", ""]
    if metrics.get("warning"):
        lines += [f"> **WARNING: {metrics['warning']}**", ""]
    lines += [f"Backbone `{metrics.get('backbone', '?')}`, weights `{metrics.get('weights', '?')}`; "
              f"protocol: {metrics.get('protocol', '?')}; {metrics.get('epochs', '?')} epochs; "
              f"{metrics.get('n_videos', '?')} videos cached, {metrics.get('n_failed', '?')} failed upstream.", "",
              "Numbers from the LAST epoch of each fold (no selection on the test set); "
              + _scoring_line(scoring), "",
              "| fold | test videos | WAR % | UAR % | linear probe WAR % | within chance noise |",
              "|---|---|---|---|---|---|"]
    by_fold = metrics.get("per_fold", {})  # keyed by fold, as DVC reads it
    for f in per_fold:
        m = by_fold.get(str(f["fold"]), {})
        probe = f"{m['probe_war']:.2f}" if "probe_war" in m else "—"
        flag = {1: "**yes**", 0: "no"}.get(m.get("near_chance"), "—")
        lines.append(f"| {f['fold']} | {f['n_test']} | {f['war']:.2f} | {f['uar']:.2f} | {probe} | {flag} |")
    lp = metrics.get("linear_probe")
    lp_cell = f"{lp['war']:.2f} ± {lp['war_std']:.2f}" if lp else "—"
    lines += [f"| **mean ± std** | {sum(f['n_test'] for f in per_fold)} | **{war[0]:.2f} ± {war[1]:.2f}** | "
              f"**{uar[0]:.2f} ± {uar[1]:.2f}** | {lp_cell} | {metrics.get('n_folds_near_chance', '?')} folds |", "",
              f"Chance: WAR {metrics.get('chance_war', '?')} % (majority class), UAR {metrics.get('chance_uar', '?')} %. "
              "A fold is *within chance noise* when its correct count is not significantly above the majority-class "
              "rate (one-sided binomial test, p > 0.05). The linear probe is logistic regression on the head's "
              "input mean-pooled over frames, same folds: the head should beat it"
              + (" (with `fusion: probe` the WAR columns already average the head with it)." if fused else "."), ""]
    paired = head_against_probe(by_fold, fused=fused)
    if paired:
        lines += [paired, ""]
    loc = metrics.get("clip_localization")
    if loc and "overlap" in loc:
        lines += ["## Emotion-rich clip localisation", "",
                  f"{loc['n_videos']} test videos with an annotated apex span. *Overlap*: the chosen clip meets the "
                  "apex span (the paper's Table 7 criterion). *Strict*: the clip's centre frame lies inside it.", "",
                  "| clip | overlap % | strict % |", "|---|---|---|",
                  f"| ours (EIAN's emotion-rich clip) | {loc['overlap']:.2f} | {loc['strict']:.2f} |",
                  f"| a random clip (expected) | {loc['random_overlap']:.2f} | {loc['random_strict']:.2f} |",
                  f"| the centre clip | {loc['centre_overlap']:.2f} | {loc['centre_strict']:.2f} |", "",
                  "The paper's Table 7 (overlap, other data: BU 55.83, MMI 67.57, AFEW 45.00, DFEW 47.65) gives no "
                  "random-clip figure; compare ours with the random and centre rows above.", ""]
    lines += ["## Per-class recall", "", "| class | recall % |", "|---|---|"]
    lines += [f"| {c} | {'—' if r is None else f'{r:.2f}'} |" for c, r in recall.items()]
    best = metrics.get("best_epoch")
    if best:
        note = (metrics.get("notes") or {}).get("best_epoch", "optimistic")
        lines += ["", "## Best epoch on the test fold (optimistic, as the authors and peers report)", "",
                  f"WAR {best['war']:.2f} ± {best['war_std']:.2f}, UAR {best['uar']:.2f} ± {best['uar_std']:.2f}; "
                  f"{note}."]
    lines += ["", "Figures: `confusion.png`, `activation_maps.png`, `tsne.png`.", ""]
    return "\n".join(lines)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def work(cfg: Config, dataset: str, *, sig: str, force: bool = False) -> Outcome:
    res = results_for(cfg, dataset)
    check_inputs(cfg, dataset)
    heads = _load_heads(cfg, dataset)
    # The head parameters (clip layout, centring) are the checkpoints', whatever params.yaml says now.
    cfg = scoped(dataclasses.replace(cfg.unscoped, train_head=heads[0].config), "evaluate")
    preds, classes = read_predictions(res.predictions)
    index = {c: i for i, c in enumerate(classes)}
    true = np.array([index[p.true] for p in preds])
    pred = np.array([index[p.predicted] for p in preds])
    folds = np.array([p.fold for p in preds])
    per_fold = []
    for f in sorted(set(folds.tolist())):
        m = folds == f
        w, u = war_uar(true[m], pred[m])
        per_fold.append({"fold": f, "n_test": int(m.sum()), "war": round(w, 2), "uar": round(u, 2)})
    war = mean_std([f["war"] for f in per_fold])
    uar = mean_std([f["uar"] for f in per_fold])
    recall = per_class_recall(true, pred, classes)
    # Text (provenance.json) and numbers (metrics.json) of the training run.
    metrics = {**_read_json(res.provenance), **_read_json(res.metrics)}
    plot_confusion(res.confusion, true, pred, classes,
                   f"{dataset}: WAR {war[0]:.1f} / UAR {uar[0]:.1f} (last epoch)")

    data = evaluation_data(cfg, dataset, heads[0].config)
    if data.class_names != classes:
        raise PipelineError(f"predictions.csv classes {classes} differ from the cache's {data.class_names}: "
                            f"the cache was rebuilt; retrain with {_train_hint(dataset)}")
    fo = _fold_outputs(heads, data, dataset, layout_for(cfg, dataset))
    fo_pred = fo["probs"].argmax(1)
    plot_activation_maps(res.activation_maps,
                         activation_examples(data, fo["rows"], fo["clip_scores"], fo["rich_clip"], fo_pred, cfg,
                                             cfg.evaluate.n_activation_examples,
                                             None if np.array_equal(fo["rich_map"], fo["clip_scores"]) else fo["rich_map"]))
    written = [p.name for p in (res.report, res.confusion, res.activation_maps, res.tsne)]
    # Always a tsne.png (a declared output): with evaluate.tsne off, one that says so, never a stale one.
    plot_tsne(res.tsne, fo["embedding"] if cfg.evaluate.tsne else None, data.cache.label[fo["rows"]], classes,
              cfg.train_head.seed)
    write_text(res.report, report_markdown(dataset, per_fold, war, uar, recall, metrics, heads[0].config))
    # The checkpoints must reproduce predictions.csv: a mismatch means they come from another run.
    csv_pred = {p.video_id: index[p.predicted] for p in preds}
    agree = float(np.mean([csv_pred.get(data.cache.video_id[r]) == q for r, q in zip(fo["rows"], fo_pred)]))
    return Outcome({"war": war[0], "war_std": war[1], "uar": uar[0], "uar_std": uar[1], "written": written,
                    "checkpoint_agreement": round(agree * 100, 2)})
