"""How far does the seed alone move a result, and what does averaging runs of different seeds give? (issue 31)

Per dataset, each run's WAR and the WAR of the mean of the runs' class probabilities, two ways:

- `--runs`: `predictions.csv` of train-head runs that differ only in `train_head.seed` (each a `bench_center.py`
  results folder, e.g. W/results/two_stream_first). That seed draws the leave-people-out folds as well as the heads'
  start, so every video is scored out of fold in every run, but by heads trained on different people: their mean
  has, across its members, seen every person but the video's own, more than any one fold's training set (an
  upper bound for an ensemble);
- `--train SEEDS` with `--params`: train-head's cross-validation (the same code) on the folds of the params'
  `train_head.seed`, once per seed in SEEDS for the heads' start, data order and clip offsets alone, as an option
  that trained several heads per fold would: the honest reading of an ensemble.

WAR is over all videos (fold-wise numbers do not line up across `--runs`; the folds hold equal numbers of videos
here, where it equals the mean over folds).

    python bench/bench_seeds.py --runs W0/results/two_stream_first,W1/results/two_stream_first \\
        --datasets bench-au-rich-8-transient,bench-au-rich-8-sustained --out bench/results/seeds.md
    python bench/bench_seeds.py --params W/params-tps-rich-8_au-rich-8.yaml --train 0,1,2 \\
        --datasets bench-au-rich-8-transient --set extract.backbone=retinaface_mnet --set extract.motion=flow_hog
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.head.data import load_training_data  # noqa: E402
from pipeline.head.report import read_predictions  # noqa: E402
from pipeline.head.train import cross_validate  # noqa: E402
from _tables import publish  # noqa: E402  (beside this script)


def read_run(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(video ids sorted, true class index, (N, C) probabilities, class names) of one run's predictions.csv."""
    preds, classes = read_predictions(folder / "predictions.csv")
    preds = sorted(preds, key=lambda p: p.video_id)
    index = {c: i for i, c in enumerate(classes)}
    return ([p.video_id for p in preds], np.array([index[p.true] for p in preds]),
            np.array([[p.probs[c] for c in classes] for p in preds]), classes)


def measure(runs: list[Path], dataset: str) -> dict:
    read = [read_run(r / dataset) for r in runs]
    ids, true, _, classes = read[0]
    for r, (other_ids, _, _, other_classes) in zip(runs, read):
        if other_ids != ids or other_classes != classes:
            raise SystemExit(f"{r / dataset}: other videos or classes than {runs[0] / dataset}")
    wars = [100 * float((p.argmax(1) == true).mean()) for _, _, p, _ in read]
    mean = 100 * float((np.mean([p for _, _, p, _ in read], axis=0).argmax(1) == true).mean())
    return {"dataset": dataset, "runs": [str(r) for r in runs], "war": wars, "mean_of_runs": mean,
            "n_videos": len(ids)}


def train(params: Path, dataset: str, seeds: list[int], overrides: list[str]) -> dict:
    """Every seed's cross-validation on the same folds (those of the params' own seed); the fused class
    probabilities train-head writes to predictions.csv, per video."""
    cfg = load_config(params, dataset=dataset, overrides=overrides)
    data = load_training_data(cfg, dataset)
    true, probs = data.cache.label, []
    for seed in seeds:
        results = cross_validate(dataclasses.replace(cfg.train_head, seed=seed), data.cache.features, true, data.folds,
                                 len(data.class_names), desc=f"{dataset} seed {seed}",
                                 subjects=data.cache.subject, groups=data.groups)
        p = np.zeros((len(true), len(data.class_names)))
        for r in results:
            p[r.test] = r.probs
        probs.append(p)
    tested = np.concatenate([f.test for f in data.folds])
    wars = [100 * float((p[tested].argmax(1) == true[tested]).mean()) for p in probs]
    mean = 100 * float((np.mean(probs, axis=0)[tested].argmax(1) == true[tested]).mean())
    return {"dataset": dataset, "seeds": seeds, "folds_seed": cfg.train_head.seed, "war": wars, "mean_of_runs": mean,
            "n_videos": int(len(tested))}


def write(rows: list[dict], out: Path, argv: list[str]) -> None:
    n = len(rows[0]["war"])
    how = (f"the folds of seed {rows[0]['folds_seed']}, the heads of seeds {', '.join(map(str, rows[0]['seeds']))}"
           if "seeds" in rows[0] else "runs of different seeds, folds included")
    lines = [f"# The seed alone, and the mean of runs of different seeds (issue 31): {how}", "",
             f"`python bench/bench_seeds.py {' '.join(argv)}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}. WAR % over all videos (out of fold in every run).", "",
             "| dataset | " + " | ".join(f"run {i}" for i in range(n)) + " | spread | mean of their probabilities | "
             "gain over the runs' mean |", "|---|" + "---|" * (n + 3)]
    for r in rows:
        w = r["war"]
        lines.append(f"| {r['dataset'].removeprefix('bench-')} | " + " | ".join(f"{v:.1f}" for v in w)
                     + f" | {max(w) - min(w):.1f} | {r['mean_of_runs']:.1f} | {r['mean_of_runs'] - np.mean(w):+.1f} |")
    if "seeds" not in rows[0]:
        lines += ["", "The runs' members were trained on different people (each run draws its own folds), so their mean has "
                  "seen more people than one fold holds: an upper bound for an ensemble. `--train` reads one on the "
                  "same folds."]
    publish(out, "\n".join(lines) + "\n", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--runs", help="comma list of results folders (one dataset folder each inside)")
    how.add_argument("--train", help="comma list of seeds: train each on the same folds (needs --params)")
    ap.add_argument("--params", type=Path, help="with --train: bench_center.py's params file listing the datasets")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="with --train: as the CLI's --set")
    ap.add_argument("--datasets", required=True, help="comma list")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "seeds.md")
    args = ap.parse_args()
    if args.train and not args.params:
        ap.error("--train needs --params")
    rows = []
    for ds in args.datasets.split(","):
        rows.append(train(args.params, ds, [int(s) for s in args.train.split(",")], args.overrides) if args.train
                    else measure([Path(r) for r in args.runs.split(",")], ds))
        write(rows, args.out, sys.argv[1:])  # after every dataset: a stopped run keeps what it measured


if __name__ == "__main__":
    main()
