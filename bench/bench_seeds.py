"""How far does the seed alone move a result, and what does averaging runs of different seeds give? (issue 31)

Reads `predictions.csv` of train-head runs that differ only in `train_head.seed` (each a `bench_center.py` results
folder, e.g. W/results/two_stream_first) and prints, per dataset, each run's WAR and the WAR of the mean of their
class probabilities. The seed draws the leave-people-out folds as well as the heads' initialisation and data order,
so every video is scored out of fold in every run, by heads that never saw its person, and the mean is an
out-of-fold reading too (an ensemble over seeds and splits; fold-wise numbers do not line up across runs, so WAR
is over all videos: the folds hold equal numbers of videos here, and it equals the mean over folds).

    python bench/bench_seeds.py --runs W0/results/two_stream_first,W1/results/two_stream_first \\
        --datasets bench-au-rich-8-transient,bench-au-rich-8-sustained --out bench/results/seeds.md
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

from pipeline.head.report import read_predictions  # noqa: E402
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


def write(rows: list[dict], out: Path, argv: list[str]) -> None:
    n = len(rows[0]["war"])
    lines = ["# The seed alone, and the mean of runs of different seeds (issue 31)", "",
             f"`python bench/bench_seeds.py {' '.join(argv)}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}. WAR % over all videos (out of fold in every run).", "",
             "| dataset | " + " | ".join(f"run {i}" for i in range(n)) + " | spread | mean of their probabilities | "
             "gain over the runs' mean |", "|---|" + "---|" * (n + 3)]
    for r in rows:
        w = r["war"]
        lines.append(f"| {r['dataset'].removeprefix('bench-')} | " + " | ".join(f"{v:.1f}" for v in w)
                     + f" | {max(w) - min(w):.1f} | {r['mean_of_runs']:.1f} | {r['mean_of_runs'] - np.mean(w):+.1f} |")
    publish(out, "\n".join(lines) + "\n", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="comma list of results folders (one dataset folder each inside)")
    ap.add_argument("--datasets", required=True, help="comma list")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "seeds.md")
    args = ap.parse_args()
    runs = [Path(r) for r in args.runs.split(",")]
    write([measure(runs, ds) for ds in args.datasets.split(",")], args.out, sys.argv[1:])


if __name__ == "__main__":
    main()
