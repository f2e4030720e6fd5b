"""Does the head over- or under-train? Reads the per-epoch history train-head writes
(`<run>/history/fold-k.csv`) and prints, per run, what the curves show (issue 11, item 5).

    python bench/curves.py results/demo
    python bench/curves.py bench/work-center/results/*/bench-*      # every bench_center run

Columns, each the median over folds (WAR numbers: mean over folds):
- *train fit*: first epoch whose training accuracy reaches 99 % (the head has memorised its videos);
- *test-loss min*: the epoch of the lowest test loss, and that loss against the last epoch's;
- *last / best WAR*: the last epoch's test WAR (what we report) and the best epoch's (chosen on the
  test fold, so optimistic: shown only to size the gap).
Reading them: a test loss that bottoms out long before the last epoch while training accuracy is at
100 % is over-training; a last-epoch WAR far below the best epoch's says it costs accuracy, a small
gap says the argmax is stable even though the loss grows (overconfidence, not lost accuracy).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np


def fold_summary(path: Path) -> dict:
    rows = list(csv.DictReader(path.open()))
    epoch = np.array([int(r["epoch"]) for r in rows])
    train_acc = np.array([float(r["train_acc"]) for r in rows])
    test_loss = np.array([float(r["test_loss"]) for r in rows])
    test_war = np.array([float(r["test_war"]) for r in rows])
    fit = epoch[train_acc >= 99.0]
    i = int(test_loss.argmin())
    return {"epochs": int(epoch[-1]), "fit": int(fit[0]) if len(fit) else None, "loss_min_epoch": int(epoch[i]),
            "loss_min": float(test_loss[i]), "loss_last": float(test_loss[-1]),
            "war_last": float(test_war[-1]), "war_best": float(test_war.max())}


def run_summary(run: Path) -> dict | None:
    folds = [fold_summary(p) for p in sorted((run / "history").glob("fold-*.csv"))]
    if not folds:
        return None
    fits = [f["fit"] for f in folds if f["fit"] is not None]
    med = lambda k: float(np.median([f[k] for f in folds]))  # noqa: E731
    return {"run": str(run), "folds": len(folds), "epochs": folds[0]["epochs"],
            "fit": f"{np.median(fits):.0f} ({len(fits)}/{len(folds)} folds)" if fits else "never",
            "loss_min_epoch": med("loss_min_epoch"), "loss_min": med("loss_min"), "loss_last": med("loss_last"),
            "war_last": float(np.mean([f["war_last"] for f in folds])),
            "war_best": float(np.mean([f["war_best"] for f in folds]))}


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    print("| run | folds | epochs | train fit (epoch) | test-loss min epoch | test loss min → last | "
          "last-epoch WAR % | best-epoch WAR % (optimistic) |")
    print("|---|---|---|---|---|---|---|---|")
    for arg in argv:
        s = run_summary(Path(arg))
        if s is None:
            print(f"| {arg} | no history/fold-*.csv | | | | | | |")
            continue
        print(f"| {s['run']} | {s['folds']} | {s['epochs']} | {s['fit']} | {s['loss_min_epoch']:.0f} | "
              f"{s['loss_min']:.2f} → {s['loss_last']:.2f} | {s['war_last']:.1f} | {s['war_best']:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
