"""Why does the head stay under a linear probe on held expressions? (issue 31)

With six training people the default head reads held (`sustained`) expressions 14-18 points worse than
logistic regression on its own input mean-pooled over the frames (bench/results/robust.md). This bench
takes the head apart on the caches `bench/bench_center.py` made, on the same leave-people-out folds:

- **probe** rows: logistic regression (standardised, C = 1, the head's sanity probe) on the input averaged
  over all cached frames, and over only the 35 frames the head sees at test time (offset 15);
- **meanpool** rows: the paper's ResNet-18 row (frames averaged, one linear layer) trained with the head's
  recipe (Adam, lr 1e-4, 120 epochs), then with lr 1e-3 and with `standardize`: is it the model or the
  training that falls short of the probe?
- **ceflnet** rows: the default head; with lr 1e-3; its input scaled by one factor to RMS 1 (the head's
  input has an RMS of 0.13-0.14, printed under the table; one scalar over the whole cache, no labels), also
  with weight decay 1e-2; the frames smoothed over time (a 9-frame moving average per video, against blinks
  and speech); a narrower head (`hidden` 128).

Every trained row reports the last epoch (mean ± std over folds), the optimistic best epoch, the final
training accuracy and the epoch of the lowest test loss (median over folds). A diagnostic of the
defaults, not a search: nothing here is chosen on these folds.

    python bench/bench_head_gap.py --params W/params-tps-rich-8.yaml --params W/params-au-rich-8.yaml \\
        --datasets bench-tps-rich-8-sustained,bench-au-rich-8-sustained     # W: bench_center.py's --work
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.head.data import load_training_data  # noqa: E402
from pipeline.head.sampling import ClipSampler  # noqa: E402
from pipeline.head.sanity import linear_probe  # noqa: E402
from pipeline.head.train import cross_validate  # noqa: E402
from _tables import add_cache_args, params_for, publish  # noqa: E402  (beside this script)


@dataclass(frozen=True)
class Row:
    name: str
    kind: str = "ceflnet"  # ceflnet | meanpool | probe
    overrides: tuple[str, ...] = ()
    transform: str = ""  # "" | rms1 | smooth9 | all (probe: every frame) | test (probe: the head's test frames)


ROWS = (
    Row("probe, all frames", "probe", transform="all"),
    Row("probe, the head's 35 test frames", "probe", transform="test"),
    Row("meanpool, the head's recipe", "meanpool"),
    Row("meanpool, lr 1e-3", "meanpool", ("train_head.lr=1e-3",)),
    Row("meanpool, standardize", "meanpool", ("train_head.standardize=true",)),
    Row("ceflnet, default", "ceflnet"),
    Row("ceflnet, lr 1e-3", "ceflnet", ("train_head.lr=1e-3",)),
    Row("ceflnet, input RMS 1", "ceflnet", transform="rms1"),
    Row("ceflnet, input RMS 1, weight decay 1e-2", "ceflnet", ("train_head.weight_decay=1e-2",), "rms1"),
    Row("ceflnet, frames smoothed (9)", "ceflnet", transform="smooth9"),
    Row("ceflnet, hidden 128", "ceflnet", ("train_head.hidden=128",)),
)


def transformed(features: np.ndarray, how: str) -> np.ndarray:
    if how == "rms1":
        f = features.astype(np.float32)
        return f / np.sqrt(np.mean(f * f))
    if how == "smooth9":
        from scipy.ndimage import uniform_filter1d

        return uniform_filter1d(features.astype(np.float32), 9, axis=1, mode="nearest")
    return features


def probe(features: np.ndarray, labels: np.ndarray, folds, frames: np.ndarray) -> list[float]:
    """The head's sanity probe (pipeline/head/sanity.py) on the given frames only."""
    return [linear_probe(features[:, frames], labels, f.train, f.test)[0] for f in folds]


def measure(params: Path, dataset: str, folds: int, rows: tuple[Row, ...]) -> list[dict]:
    out = []
    for row in rows:
        t0 = time.time()
        cfg = load_config(params, dataset=dataset, overrides=[f"train_head.folds={folds}", *row.overrides])
        data = load_training_data(cfg, dataset)
        feats, labels = data.cache.features, data.cache.label
        rec = {"dataset": dataset, "row": row.name,
               "input_rms": float(np.sqrt(np.mean(np.square(feats, dtype=np.float64))))}
        if row.kind == "probe":
            test = ClipSampler.from_config(cfg.train_head, feats.shape[1]).test_indices().reshape(-1).numpy()
            frames = np.arange(feats.shape[1]) if row.transform == "all" else test
            war = probe(feats, labels, data.folds, frames)
        else:
            res = cross_validate(cfg.train_head, transformed(feats, row.transform), labels, data.folds,
                                 len(data.cache.class_names), kind=row.kind, subjects=data.cache.subject,
                                 groups=data.groups, desc=f"{dataset}: {row.name}")
            war = [r.history[-1].test_war for r in res]
            rec |= {"best": float(np.mean([max(h.test_war for h in r.history) for r in res])),
                    "train_acc": float(np.mean([r.history[-1].train_acc for r in res])),
                    "min_test_loss_epoch": float(np.median([min(r.history, key=lambda h: h.test_loss).epoch
                                                            for r in res]))}
        rec |= {"war": float(np.mean(war)), "war_std": float(np.std(war, ddof=1)), "seconds": round(time.time() - t0)}
        print(rec, flush=True)
        out.append(rec)
    return out


def write(rows: list[dict], out: Path, argv: list[str]) -> None:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    cell = {(r["row"], r["dataset"]): r for r in rows}
    lines = ["# Why the head stays under a linear probe on held expressions (issue 31)", "",
             f"`python bench/bench_head_gap.py {' '.join(argv)}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}. Same caches and leave-people-out folds as bench/results/robust.md "
             "(8 people, 6 training people a fold), the defaults (`two_stream_first`, `subject_norm`) unless the row "
             "says otherwise. WAR %, last epoch, mean ± std over folds; *best*: the optimistic best epoch; *train*: "
             "training accuracy at the last epoch; *loss min*: epoch of the lowest test loss (median over folds).", "",
             "| row | " + " | ".join(f"{d.removeprefix('bench-')} WAR | best | train | loss min" for d in datasets) + " |",
             "|---|" + "---|---|---|---|" * len(datasets)]
    for name in dict.fromkeys(r["row"] for r in rows):
        cells = []
        for d in datasets:
            c = cell.get((name, d))
            if c is None:
                cells.append("— | | |")
                continue
            extra = (f"{c['best']:.1f} | {c['train_acc']:.1f} | {c['min_test_loss_epoch']:.0f}" if "best" in c
                     else "— | — | —")
            cells.append(f"{c['war']:.1f} ± {c['war_std']:.1f} | {extra}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rms = {d: next(r["input_rms"] for r in rows if r["dataset"] == d) for d in datasets}
    lines += ["", "RMS of the head's input (every frame, both streams, after `subject_norm`): "
              + ", ".join(f"{d.removeprefix('bench-')} {v:.3f}" for d, v in rms.items()) + "."]
    publish(out, "\n".join(lines) + "\n", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_args(ap)
    ap.add_argument("--rows", default="", help="comma list of row numbers (0-based) to run; default every row")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "head_gap.md")
    args = ap.parse_args()
    rows = ROWS if not args.rows else tuple(ROWS[int(i)] for i in args.rows.split(","))
    found = [r for ds in args.datasets.split(",") for r in measure(params_for(args.params, ds), ds, args.folds, rows)]
    write(found, args.out, sys.argv[1:])


if __name__ == "__main__":
    main()
