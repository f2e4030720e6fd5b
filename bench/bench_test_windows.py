"""Does averaging the test windows help? The same checkpoints scored both ways, fold by fold (issue 31).

    python bench/bench_test_windows.py [LABEL=]RUN_DIR [...] [--out bench/results/test_windows.md]

A run made with `train_head.test_windows: all` holds both readings of each fold's last-epoch head: its
history's last epoch scores the `test_offset` window alone (the paper's `fixed`), its metrics.json the
probabilities averaged over every training window start (`all`); the training is the same either way, so
the difference is the test-time reading alone. Prints, per run, both WARs (mean ± std over folds), the
per-fold differences, and over all runs' folds how many `all` is ahead on, behind on and level with, with a
two-sided sign test over the folds that differ.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.head.report import mean_std  # noqa: E402
from pipeline.head.sanity import sign_test  # noqa: E402
from pipeline.head.train import load_head  # noqa: E402


def fold_pairs(run: Path) -> list[tuple[float, float]]:
    """(fixed, all) WAR per fold of one run made with test_windows: all (RUN_DIR: WORK/results/OPTION/DATASET)."""
    checkpoints = sorted((run / "checkpoints").glob("fold-*.pt"))
    if not checkpoints:
        raise SystemExit(f"{run}: no checkpoints/fold-*.pt; RUN_DIR is a train-head results folder")
    windows = load_head(checkpoints[0]).config.test_windows  # load_head reads older checkpoints as fixed
    if windows != "all":
        raise SystemExit(f"{run}: made with test_windows {windows!r}; only an `all` run holds both readings")
    per_fold = json.loads((run / "metrics.json").read_text())["per_fold"]
    pairs = []
    for k in sorted(per_fold, key=int):
        rows = list(csv.DictReader((run / "history" / f"fold-{k}.csv").open()))
        pairs.append((float(rows[-1]["test_war"]), float(per_fold[k]["war"])))
    return pairs


def cell(v: list[float]) -> str:
    m, s = mean_std(v)
    return f"{m:.1f} ± {s:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="[LABEL=]RUN_DIR (label: the row's name, default the run's folder)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = ["| run | fixed WAR | all WAR | all - fixed, per fold |", "|---|---|---|---|"]
    diffs: list[float] = []
    for arg in args.runs:
        label, _, path = arg.rpartition("=")
        run = Path(path)
        pairs = fold_pairs(run)
        d = [a - f for f, a in pairs]
        diffs += d
        lines.append(f"| {label or run.name} | {cell([f for f, _ in pairs])} | "
                     f"{cell([a for _, a in pairs])} | {' / '.join(f'{round(x, 1) + 0.0:+.1f}' for x in d)} |")
    # history keeps 4 decimals, metrics.json 2: a level fold can differ by 0.003
    ahead, behind, level, p = sign_test(diffs, tol=0.01)
    lines += ["", f"Over {len(diffs)} folds: `all` ahead on {ahead}, behind on {behind}, level on {level}; "
                  f"mean {np.mean(diffs):+.2f} points; two-sided sign test p = {p:.2g}."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(f"# Test windows: `fixed` against `all` on the same checkpoints\n\n`python bench/bench_test_windows.py "
                            f"{' '.join(shlex.quote(r) for r in args.runs)}`\n\n{text}\n")


if __name__ == "__main__":
    main()
