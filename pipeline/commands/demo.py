"""`pipeline demo`: the whole pipeline on generated videos of real faces, offline, in minutes.

Generates the demo dataset (adapter `demo`) on first use, runs every stage, and ends with a short
report: WAR / UAR and clip localisation beside chance, the pictures written, and which backbone
made the features. ResNet-18 with ImageNet weights when they are in the torch hub cache; otherwise
the detector's own pretrained MobileNet body (`retinaface_mnet`, always on this machine). Never
random weights, whose features carry no expression signal (docs/reference.md §9).
"""
from __future__ import annotations

import json
import sys
import time
from typing import Callable

import click
from pipeline.errors import PipelineError


def choose_backbone() -> list[str]:
    from pipeline.backbones.resnet import imagenet_path

    if imagenet_path().is_file():
        return ["extract.backbone=resnet18", "extract.weights=imagenet"]
    return ["extract.backbone=retinaface_mnet"]


@click.command("demo")
@click.option("--params", "params_path", default=None, type=click.Path(),
              help="Parameter file [default: params.yaml when present, else the built-in defaults].")
@click.option("--data-root", default=None, help="Where the demo cache goes (default: params.yaml data_root).")
@click.option("--results-root", default=None, help="Where results go (default: params.yaml results_root).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override any parameter.")
@click.option("--quick", is_flag=True, help="A smoke run of 1-2 minutes (dataset demo-quick: 12 videos of 2 people, "
              "2 folds x 3 epochs): checks that every stage runs; its numbers mean nothing.")
def command(params_path: str | None, data_root: str | None, results_root: str | None, overrides: tuple[str, ...],
            quick: bool) -> None:
    """Generate the demo dataset from real face photos (no data needed) and run every stage on it.

    Reads params.yaml (`datasets.demo`); writes <data_root>/demo/ (videos, manifest, faces.h5,
    features) and <results_root>/demo/ (metrics.json, predictions.csv, figures), then prints a report.
    """
    import logging

    from pipeline.cli import load
    from pipeline.registry import pipeline_stages

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    try:
        backbone = choose_backbone()
        name, adapter, root = ("demo-quick", "demo", "data/demo-quick/raw") if quick else ("demo", None, None)
        cfg = load(params_path, name, adapter, root, (*backbone, *(QUICK if quick else ()), *overrides), data_root,
                   results_root)
        click.secho(announce(cfg, name), fg="yellow" if quick else None, bold=quick, err=True)
        from pipeline.workers import orphan_safe_workers

        stages = pipeline_stages()
        eta = Remaining([st.name for st in stages])
        for stage in stages:
            t = time.time()
            with orphan_safe_workers():  # joblib workers exit if the demo is killed (as in `pipeline run`)
                summary = stage.run(cfg, dataset=name)
            took = time.time() - t
            eta.done(stage.name, took, skipped=bool(summary.get("skipped")))
            click.echo(f"[{stage.name}] {'up to date' if summary.get('skipped') else 'done'} in {took:.0f} s"
                       + (f"; about {eta.left() / 60:.0f} min left" if eta.pending and not quick else ""), err=True)
    except PipelineError as err:
        click.secho(f"error: {err}", fg="red", err=True)
        sys.exit(err.exit_code)
    metrics = json.loads((cfg.results_dir(name) / "metrics.json").read_text())
    note = record_for_dvc(cfg, name, lambda: load(params_path, name, None, None, (), data_root, results_root),
                          params_path, data_root, results_root)
    click.echo(report(cfg, metrics, time.time() - t0, name))
    if note:
        click.echo(note)
    click.echo(realism(cfg, name))
    if quick:
        click.secho(SMOKE, fg="yellow", bold=True)


# Seconds of each stage of the full demo on a quiet 2-core AMD EPYC with AVX2 only, from one `time pipeline demo`
# in a fresh clone since the demo has one video per class and person (72, issue 28; 2026-12-06: 5 min 32 s wall,
# the realism check's 10 s and start-up included). They give the announced duration; the remaining-time
# estimate scales them by how fast this machine has been so far.
STAGE_SECONDS = {"manifest": 21, "detect": 23, "resample": 1, "extract": 48, "train-head": 216, "evaluate": 4}
DEMO_MINUTES = round(sum(STAGE_SECONDS.values()) / 60)
"""What the demo and `pipeline init` announce (README says the same)."""


class Remaining:
    """The demo's remaining time: the reference seconds of the stages still to run, times this machine's
    speed so far (actual over reference seconds of the stages that computed; skipped ones say nothing)."""

    def __init__(self, names: list[str]):
        self.pending = list(names)
        self.actual = self.reference = 0.0

    def done(self, name: str, seconds: float, skipped: bool) -> None:
        self.pending.remove(name)
        if not skipped and STAGE_SECONDS.get(name):
            self.actual, self.reference = self.actual + seconds, self.reference + STAGE_SECONDS[name]

    def left(self) -> float:
        speed = self.actual / self.reference if self.reference else 1.0
        return speed * sum(STAGE_SECONDS.get(n, 0) for n in self.pending)


def record_for_dvc(cfg, name: str, plain: Callable[[], object], params_path: str | None, data_root: str | None,
                   results_root: str | None) -> str | None:
    """After the demo, tell DVC what ran, so that `dvc repro` has nothing to recompute (issue 27).

    The demo and `dvc repro` run the same stages through the same runner; only DVC's record (dvc.lock:
    the hashes of each stage's deps, params and outputs) would not know the demo's outputs. So when this
    folder is a DVC project whose `repro:` lists the dataset and the demo ran exactly what dvc.yaml runs
    (params.yaml, no --set, no other roots: `plain()` loads that configuration), `dvc commit` records the
    outputs as they are. Floats differ between machines, so the committed dvc.lock of another machine
    cannot be reused; this is the same record `dvc repro` would have written here. Otherwise nothing is
    touched, and the returned line says why `dvc repro` would rerun."""
    import shutil
    import subprocess
    from pathlib import Path

    from pipeline.registry import pipeline_stages

    if not (Path("dvc.yaml").is_file() and Path(".dvc").is_dir()) or name not in cfg.repro:
        return None
    if params_path not in (None, "params.yaml") or data_root or results_root or cfg != plain():
        return ("dvc: not recorded in dvc.lock (the demo ran with --set, --params or other roots than dvc.yaml "
                "runs), so `dvc repro` reruns its stages")
    dvc = shutil.which("dvc")
    if dvc is None:
        return "dvc: not installed, dvc.lock not updated (`pip install 'ceflnet-pipeline[dvc]'`)"
    targets = [f"{st.name}@{name}" for st in pipeline_stages()]
    done = subprocess.run([dvc, "commit", "--force", "--quiet", *targets], capture_output=True, text=True)
    if done.returncode:
        return f"dvc: `dvc commit` failed, dvc.lock not updated: {(done.stderr or done.stdout).strip()[-300:]}"
    return f"dvc: recorded in dvc.lock (`dvc commit {' '.join(targets)}`): `dvc repro` has nothing to recompute"


def realism(cfg, name: str = "demo") -> str:
    """Do the demo's expressions read as intended to a model trained on real faces? (issue 31)"""
    from pipeline.demo.realism import check_videos

    try:
        return "\n" + check_videos(cfg.resolve_root(name)).format(short=True)
    except PipelineError as err:  # the report above stands; say why this part is missing
        return f"\nrealism check not run: {err}"


QUICK = ("datasets.demo-quick.options.seed=0", "datasets.demo-quick.options.identities=2",
         "datasets.demo-quick.options.videos_per_class_per_identity=1", "datasets.demo-quick.options.n_frames=[50, 60]",
         "detect.det_size=256", "train_head.folds=2", "train_head.epochs=3",
         "evaluate.tsne=false", "evaluate.n_activation_examples=1")
"""`--quick`: its own dataset (the full demo's videos and results stay), the fewest people and epochs that
still run every stage with subject-independent folds."""
SMOKE = "SMOKE RUN (pipeline demo --quick): every stage ran; its numbers mean nothing (12 videos, 3 epochs)."


def demo_size(cfg, name: str = "demo") -> tuple[int, int]:
    """(videos, people) the config's demo dataset generates (its adapter's count)."""
    from pipeline.adapters import make_adapter

    ds = cfg.datasets[name]
    return make_adapter(ds.adapter, cfg.resolve_root(name), fps=ds.fps, options=ds.options).size()


def workload(cfg, name: str = "demo") -> str:
    """'72 videos (6 expressions x 12 people), 10 folds x 120 epochs': what the config's demo runs."""
    from pipeline.demo.generate import CLASSES

    videos, people = demo_size(cfg, name)
    th = cfg.train_head
    return f"{videos} videos ({len(CLASSES)} expressions x {people} people), {th.folds} folds x {th.epochs} epochs"


def announce(cfg, name: str) -> str:
    """What the demo is about to do and how long it takes, before it starts."""
    what = workload(cfg, name)
    if name == "demo-quick":
        return f"{SMOKE.split(':')[0]}: {what}, about 1-2 minutes; a check that every stage runs, not a result."
    return (f"pipeline demo: {what}; about {DEMO_MINUTES} minutes on 2 quiet CPU cores with the defaults "
            "(`pipeline demo --quick`: a 1-2 minute smoke run).")


def report(cfg, m: dict, seconds: float, name: str = "demo") -> str:
    from cache.reader import load_cache
    from pipeline.layout import layout_for

    attrs = load_cache(layout_for(cfg, name).features).attrs
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
    probe = m.get("linear_probe")
    if probe:
        lines.append(f"linear probe on the same input and folds: WAR {probe['war']:.1f} ± {probe['war_std']:.1f} %, "
                     f"UAR {probe['uar']:.1f} ± {probe['uar_std']:.1f} %"
                     + ("  (WAR / UAR above: the head mixed with it, train_head.fusion)"
                        if cfg.train_head.fusion == "probe" else ""))
    near = m.get("n_folds_near_chance")
    if near is not None:
        lines.append(f"folds within binomial noise of chance: {near} of {m.get('n_folds', '?')}")
    loc = m.get("clip_localization")
    if loc and "overlap" in loc:
        lines.append(f"emotion-rich clip localisation: overlap {loc['overlap']:.1f} %, strict {loc['strict']:.1f} %   "
                     f"(random clip {loc['random_overlap']:.1f} / {loc['random_strict']:.1f} %, "
                     f"centre clip {loc['centre_overlap']:.1f} / {loc['centre_strict']:.1f} %)")
    lines.append("(last-epoch numbers, mean ± std over folds; best-epoch numbers in metrics.json, labelled)")
    pictures = sorted(p for p in [*cfg.results_dir(name).glob("*.png"), *(layout_for(cfg, name).qc.glob("*.png"))])
    lines.append("pictures:")
    lines += [f"  {p}" for p in pictures]
    lines.append(f"total time {seconds / 60:.1f} min")
    return "\n".join(lines)
