"""Which linear probe should `fusion: probe` average with the head? (issue 31)

Reads the fold checkpoints that a `train-head` run with `fusion: probe` left (bench_center.py's
`results/<option>/<dataset>/checkpoints`), so the head is the one that run trained; only the probe
changes. Per fold: the head alone (the checkpoint without its fused probe), each probe variant
alone and its mean with the head, on the same test people. Variants:

- `C=1`: the probe as it is (scikit-learn's default strength, pipeline/head/sanity.py);
- `inner`: C chosen from a fixed grid by leave-people-out cross-validation inside the training fold
  (its fold keys, GroupKFold); the test fold never enters the choice;
- `C=x` (`--fixed`): fixed strengths, shown for context only. Picking one of them from these columns
  would tune on the folds it is scored on.

A second table weighs the `C=1` probe against the head, (1 - a) head + a probe for a fixed grid of a
(a = 0.5 is `fusion: probe`): how far any fixed weight could move a column, read as context, never to
pick a weight on these folds.

    python bench/bench_probe.py --params W/params-tps-rich-8_au-rich-8.yaml --results W/results/two_stream_first \\
        --datasets bench-tps-rich-8-transient,bench-au-rich-8-transient --set extract.backbone=retinaface_mnet \\
        --set extract.motion=flow --set train_head.fusion=probe --set train_head.standardize=true
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.head.data import load_training_data  # noqa: E402
from pipeline.head.fusion import ProbeFusion, fuse, pooled_input  # noqa: E402
from pipeline.head.sampling import ClipSampler  # noqa: E402
from pipeline.head.sanity import probe_estimator, sign_test  # noqa: E402
from pipeline.head.train import load_head, predict  # noqa: E402
from _tables import add_cache_args, params_for  # noqa: E402  (beside this script)

GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def inner_c(x: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int) -> float:
    """The grid's C with the best leave-people-out accuracy inside the training rows (ties: the stronger
    regularisation, i.e. the smaller C)."""
    from sklearn.model_selection import GridSearchCV, GroupKFold

    cv = GroupKFold(n_splits=min(5, len(np.unique(groups))))
    search = GridSearchCV(probe_estimator(seed), {"logisticregression__C": list(GRID)}, cv=cv, n_jobs=1)
    search.fit(x, labels, groups=groups)
    scores = search.cv_results_["mean_test_score"]
    return float(GRID[int(np.flatnonzero(scores >= scores.max() - 1e-9)[0])])


def measure(params: Path, results: Path, dataset: str, overrides: list[str], fixed: list[float]) -> list[dict]:
    t0 = time.time()
    cfg = load_config(params, dataset=dataset, overrides=overrides)
    data = load_training_data(cfg, dataset)
    feats, labels, n_classes = data.cache.features, data.cache.label, len(data.cache.class_names)
    x = torch.from_numpy(feats)
    sampler = ClipSampler.from_config(cfg.train_head, feats.shape[1])
    rows = []
    for fold in data.folds:
        head = load_head(results / dataset / "checkpoints" / f"fold-{fold.index}.pt")
        model = head.model
        model.fusion = None  # the head alone
        test = torch.as_tensor(fold.test)
        head_p = predict(model, x, test, sampler)["probs"]
        pooled = pooled_input(model, x).numpy()
        truth = labels[fold.test]
        row = {"dataset": dataset, "fold": int(fold.index), "head": war(head_p, truth)}
        variants = {"C=1": 1.0, "inner": inner_c(pooled[fold.train], labels[fold.train], data.groups[fold.train],
                                                 cfg.train_head.seed)}
        variants.update({f"C={c:g}": c for c in fixed})
        for name, c in variants.items():
            fusion = ProbeFusion.fit(pooled[fold.train], labels[fold.train], n_classes, cfg.train_head.seed, C=c)
            p = fusion(torch.from_numpy(pooled[fold.test]))  # what train-head's `fusion: probe` applies
            row[f"probe {name}"], row[f"fused {name}"] = war(p, truth), war(fuse(head_p, p), truth)
            if name == "C=1":
                row["weights"] = {a: war((1 - a) * head_p + a * p, truth) for a in WEIGHTS}
        row["inner C"] = variants["inner"]
        rows.append(row)
        print(row, flush=True)
    print(f"{dataset}: {time.time() - t0:.0f} s", flush=True)
    return rows


def war(probs: torch.Tensor, truth: np.ndarray) -> float:
    return float(100 * np.mean(probs.numpy().argmax(1) == truth))


def write(rows: list[dict], out: Path, argv: list[str]) -> None:
    keys = [k for k in rows[0] if k.startswith(("probe ", "fused "))]
    lines = ["# The linear probe's strength: C = 1 or chosen inside the training fold (issue 31)", "",
             f"`python bench/bench_probe.py {' '.join(argv)}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}. The heads of one train-head run per dataset, read with each probe: alone "
             "and averaged with the head (`fusion: probe`). Last-epoch WAR % of each fold's test people; "
             f"`inner`: C from {list(GRID)} by leave-people-out CV inside the training fold.", "",
             "| dataset | fold | head | " + " | ".join(keys) + " | inner C |",
             "|---|---|---|" + "---|" * (len(keys) + 1)]
    for r in rows:
        lines.append(f"| {r['dataset'].removeprefix('bench-')} | {r['fold']} | {r['head']:.1f} | "
                     + " | ".join(f"{r[k]:.1f}" for k in keys) + f" | {r['inner C']:g} |")
    lines += ["", "Mean ± std over folds (ddof 1):", "", "| dataset | head | " + " | ".join(keys) + " |",
              "|---|---|" + "---|" * len(keys)]
    worst = {k: 100.0 for k in ["head", *keys]}
    for d in dict.fromkeys(r["dataset"] for r in rows):
        sel = [r for r in rows if r["dataset"] == d]
        cells = []
        for k in ["head", *keys]:
            v = np.array([r[k] for r in sel])
            worst[k] = min(worst[k], float(v.mean()))
            cells.append(f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f}")
        lines.append(f"| {d.removeprefix('bench-')} | " + " | ".join(cells) + " |")
    lines.append("| **worst** | " + " | ".join(f"**{worst[k]:.1f}**" for k in ["head", *keys]) + " |")
    lines += ["", "The head and the `C=1` probe weighed (1 - a) head + a probe, mean WAR over folds (context only):",
              "",
              "| dataset | " + " | ".join(f"a = {a:g}" for a in WEIGHTS) + " |", "|---|" + "---|" * len(WEIGHTS)]
    for d in dict.fromkeys(r["dataset"] for r in rows):
        sel = [r for r in rows if r["dataset"] == d]
        lines.append(f"| {d.removeprefix('bench-')} | "
                     + " | ".join(f"{np.mean([r['weights'][a] for r in sel]):.1f}" for a in WEIGHTS) + " |")
    a, b, lvl, p = sign_test([r["fused inner"] - r["fused C=1"] for r in rows])
    lines += ["", f"Fused with the `inner` probe against fused with `C=1`, fold by fold: ahead on {a}, behind on {b}, "
              f"level on {lvl} (two-sided sign test p = {p:.3f})."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_args(ap)
    ap.add_argument("--results", type=Path, action="append", required=True,
                    help="train-head results root(s) holding <dataset>/checkpoints, one per --params or one for all")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="as train-head's --set")
    ap.add_argument("--fixed", default="0.01,0.1", help="fixed strengths shown for context")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "probe.md")
    args = ap.parse_args()
    fixed = [float(c) for c in args.fixed.split(",") if c]
    rows = []
    for ds in args.datasets.split(","):
        params = params_for(args.params, ds)
        results = next((r for r in args.results if (r / ds / "checkpoints").is_dir()), args.results[0])
        rows += measure(params, results, ds, [f"train_head.folds={args.folds}", *args.overrides], fixed)
    write(rows, args.out, sys.argv[1:])


if __name__ == "__main__":
    main()
