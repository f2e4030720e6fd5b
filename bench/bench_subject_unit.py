"""Whom should `subject_norm` normalise when related people share a fold key? (issue 31)

The many-people sources (`bench_center.py --sources au:rich:12+1`) hold families: two shipped people and
their blends, kept in one fold by the manifest's `group`. This trains the head twice on the same cache and
the same folds, fold by fold (below with the wild family's default: no flow, no `standardize`):

- `person`: what train-head does — each person a subject (`subject_norm` and identity handling per person);
- `family`: the subjects replaced by their group (what the benchmark did before the manifest had `group`).

    python bench/bench_subject_unit.py --params W/params-au-rich-12+1.yaml --folds 6 \\
        --datasets bench-au-rich-12p1-sustained --set extract.backbone=retinaface_mnet --set extract.motion=none \\
        --set train_head.fusion=probe --set train_head.standardize=false     # W: bench_center.py's --work
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.head import data as head_data  # noqa: E402
from pipeline.head.report import mean_std  # noqa: E402
from pipeline.head.train import cross_validate  # noqa: E402
from _tables import add_cache_args, params_for, publish  # noqa: E402  (beside this script)


def measure(params: Path, dataset: str, overrides: list[str], unit: str) -> list[float]:
    """Last-epoch WAR per fold with `subject_norm` per person or per family (folds by group either way)."""
    cfg = load_config(params, dataset=dataset, overrides=overrides)
    load = head_data.load_cache

    def as_families(path):  # the cache's subjects replaced by their groups before the head input is made
        cache = load(path)
        cache.subject = list(head_data.fold_groups(cache.subject, head_data.manifest_rows(cfg, dataset, cache.video_id)))
        return cache

    head_data.load_cache = as_families if unit == "family" else load
    try:
        data = head_data.load_training_data(cfg, dataset)
    finally:
        head_data.load_cache = load
    results = cross_validate(cfg.train_head, data.cache.features, data.cache.label, data.folds, len(data.class_names),
                             subjects=np.asarray(data.cache.subject), groups=data.groups, desc=f"{dataset} ({unit})")
    return [float(100 * np.mean(r.pred == data.cache.label[r.test])) for r in results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_args(ap)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--units", default="person,family")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "subject_unit.md")
    args = ap.parse_args()
    t0, rows = time.time(), []
    overrides = [f"train_head.folds={args.folds}", *args.overrides]
    for ds in args.datasets.split(","):
        for unit in args.units.split(","):
            wars = measure(params_for(args.params, ds), ds, overrides, unit)
            rows.append({"dataset": ds, "unit": unit, "folds": wars})
    lines = ["# `subject_norm` per person or per family, same cache and folds (issue 31)", "",
             f"`python bench/bench_subject_unit.py {' '.join(sys.argv[1:])}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}; {(time.time() - t0) / 60:.0f} min. Last-epoch WAR %, per fold and mean ± std.",
             "", "| dataset | subjects | WAR per fold | mean ± std |", "|---|---|---|---|"]
    for r in rows:
        m, s = mean_std(r["folds"])
        lines.append(f"| {r['dataset']} | {r['unit']} | {' / '.join(f'{w:.1f}' for w in r['folds'])} | {m:.1f} ± {s:.1f} |")
    publish(args.out, "\n".join(lines) + "\n", rows)


if __name__ == "__main__":
    main()
