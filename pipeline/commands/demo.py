"""`pipeline demo`: the whole pipeline on generated videos of real faces, offline, in minutes.

Generates the demo dataset (adapter `demo`) on first use, runs every stage, and ends with a short
report: WAR / UAR and clip localisation beside chance, the pictures written, and which backbone
made the features. ResNet-18 with ImageNet weights when they are in the torch hub cache; otherwise
the detector's own pretrained MobileNet body (`retinaface_mnet`, always on this machine). Never
random weights, whose features carry no expression signal (REFERENCE §9).
"""
from __future__ import annotations

import json
import sys
import time

import click
import numpy as np

from pipeline.errors import PipelineError

STAGES = ("manifest", "detect", "resample", "extract", "train-head", "evaluate")


def choose_backbone() -> list[str]:
    from pipeline.backbones.resnet import imagenet_path

    if imagenet_path().is_file():
        return ["extract.backbone=resnet18", "extract.weights=imagenet"]
    return ["extract.backbone=retinaface_mnet"]


def localisation_chance(cfg, dataset: str) -> float | None:
    """Share of test clips overlapping the apex span: what a random emotion-rich clip would score."""
    from cache import load_cache
    from pipeline.head.sampling import ClipSampler
    from pipeline.io import read_manifest
    from pipeline.layout import layout_for

    lay = layout_for(cfg, dataset)
    apex = {r.video_id: (r.apex_start, r.apex_end) for r in read_manifest(lay.manifest) if r.apex_start is not None}
    if not apex:
        return None
    cache = load_cache(lay.features)
    sampler = ClipSampler.from_config(cfg.train_head, cache.frame_index.shape[1])
    hits = []
    for vid, fi in zip(cache.video_id, cache.frame_index):
        if vid not in apex:
            continue
        a, b = apex[vid]
        for k in range(sampler.n_clips):
            s, e = (int(v) for v in sampler.clip_span(np.int64(k)))
            hits.append(fi[s] <= b and fi[e] >= a)
    return 100.0 * float(np.mean(hits))


@click.command("demo")
@click.option("--params", "params_path", default="params.yaml", show_default=True, type=click.Path())
@click.option("--data-root", default=None, help="Where the demo cache goes (default: params.yaml data_root).")
@click.option("--results-root", default=None, help="Where results go (default: params.yaml results_root).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override any parameter.")
def command(params_path: str, data_root: str | None, results_root: str | None, overrides: tuple[str, ...]) -> None:
    """Generate the demo dataset from real face photos (no data needed) and run every stage on it.

    Reads params.yaml (`datasets.demo`); writes <data_root>/demo/ (videos, manifest, faces.h5,
    features) and <results_root>/demo/ (metrics.json, predictions.csv, figures), then prints a report.
    """
    import logging

    from pipeline.cli import load
    from pipeline.registry import stage_module

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    try:
        backbone = choose_backbone()
        cfg = load(params_path, "demo", None, None, (*backbone, *overrides), data_root, results_root)
        for stage in STAGES:
            t = time.time()
            summary = stage_module(stage).run(cfg, dataset="demo")
            click.echo(f"[{stage}] {'up to date' if summary.get('skipped') else 'done'} in {time.time() - t:.0f} s",
                       err=True)
        chance_loc = localisation_chance(cfg, "demo")
    except PipelineError as err:
        click.secho(f"error: {err}", fg="red", err=True)
        sys.exit(err.exit_code)
    metrics = json.loads((cfg.results_dir("demo") / "metrics.json").read_text())
    click.echo(report(cfg, metrics, chance_loc, time.time() - t0))


def report(cfg, m: dict, chance_loc: float | None, seconds: float) -> str:
    from cache import load_cache
    from pipeline.layout import layout_for

    attrs = load_cache(layout_for(cfg, "demo").features).attrs
    what = (f"ResNet-18, {attrs['weights']}" if attrs["backbone"] == "resnet18" else
            "the detector's pretrained MobileNet-0.25 body (retinaface_mnet, WIDER FACE weights; "
            "ImageNet ResNet-18 weights are not cached on this machine)")
    lines = [
        "", "CEFLNet demo report", "===================",
        f"features: {what}, {attrs['feature_dim']}-d per frame",
        f"videos: {m['n_videos']} ({m.get('n_failed', 0)} failed), {len(m.get('per_fold', []))} subject-independent folds",
        f"WAR {m['war']:.1f} ± {m['war_std']:.1f} %   (chance {m.get('chance_war', float('nan')):.1f} %)",
        f"UAR {m['uar']:.1f} ± {m['uar_std']:.1f} %   (chance {m.get('chance_uar', float('nan')):.1f} %)",
    ]
    loc = m.get("clip_localization")
    if loc is not None:
        loc_val = loc if isinstance(loc, (int, float)) else loc["accuracy"]
        chance = f"{chance_loc:.1f} %" if chance_loc is not None else "n/a"
        lines.append(f"emotion-rich clip localisation {loc_val:.1f} %   (a random clip overlaps the apex {chance})")
    lines.append("(last-epoch numbers, mean ± std over folds; best-epoch numbers in metrics.json, labelled)")
    pictures = sorted(p for p in [*cfg.results_dir("demo").glob("*.png"), *(layout_for(cfg, "demo").qc.glob("*.png"))])
    lines.append("pictures:")
    lines += [f"  {p}" for p in pictures]
    lines.append(f"total time {seconds / 60:.1f} min")
    return "\n".join(lines)
