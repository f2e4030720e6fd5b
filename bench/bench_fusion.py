"""What does `train_head.fusion: probe` add, fold by fold? (issue 31)

Fusion happens after training (pipeline/head/fusion.py), so one training run per dataset gives all three
readings of the same heads on the same leave-people-out folds: the head alone, the probe alone and their
mean (the default). It trains with `fusion: none` and then applies the module train-head applies: each
fold's checkpoint module is rebuilt, its input pooled and the probe fitted on the training fold. Per
dataset it prints the three WARs per fold; at the end, the fused-minus-head differences over every fold
with a two-sided sign test (pipeline/head/sanity.py).

    python bench/bench_fusion.py --params W/params-tps-rich-8_au-rich-8.yaml \\
        --datasets bench-tps-rich-8-transient,bench-tps-rich-8-sustained,bench-au-rich-8-transient,bench-au-rich-8-sustained \\
        --set extract.backbone=retinaface_mnet --set extract.motion=flow      # W: bench_center.py's --work

`--weights 0.25,0.75` adds the mixtures with those shares of the probe (`fused` is 0.5) to both tables; `--dump F.npz`
keeps every test video's head and probe probabilities (with its label, dataset and fold) for other fixed rules.
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
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.head.data import load_training_data  # noqa: E402
from pipeline.head.fusion import ProbeFusion, fuse, pooled_input  # noqa: E402
from pipeline.head.sanity import sign_test  # noqa: E402
from pipeline.head.train import checkpoint_module, cross_validate  # noqa: E402
from _tables import add_cache_args, params_for, publish  # noqa: E402  (beside this script)


def war(probs: np.ndarray, truth: np.ndarray) -> float:
    return float(100 * np.mean(probs.argmax(1) == truth))


def measure(params: Path, dataset: str, overrides: list[str], weights: list[float],
            dump: list[dict] | None = None) -> list[dict]:
    t0 = time.time()
    cfg = load_config(params, dataset=dataset, overrides=overrides)
    th = dataclasses.replace(cfg.train_head, fusion="none")
    data = load_training_data(cfg, dataset)
    feats, labels, n_classes = data.cache.features, data.cache.label, len(data.cache.class_names)
    results = cross_validate(th, feats, labels, data.folds, n_classes, subjects=data.cache.subject,
                             groups=data.groups, desc=f"{dataset}")
    x = torch.from_numpy(feats)
    rows, fold_of = [], {f.index: f for f in data.folds}
    for res in results:
        fold = fold_of[res.fold]
        model = checkpoint_module(th, feats.shape[-1], n_classes)
        model.load_state_dict(res.state_dict)
        pooled = pooled_input(model.eval(), x)
        probe = ProbeFusion.fit(pooled[fold.train].numpy(), labels[fold.train], n_classes, th.seed)(pooled[fold.test])
        head = torch.from_numpy(res.probs)
        truth = labels[fold.test]
        rows.append({"dataset": dataset, "fold": int(fold.index), "head": war(head.numpy(), truth),
                     "probe": war(probe.numpy(), truth), "fused": war(fuse(head, probe).numpy(), truth),
                     **{mixture(w): war(fuse(head, probe, w).numpy(), truth) for w in weights}})
        print(rows[-1], flush=True)
        if dump is not None:
            dump.append({"dataset": dataset, "fold": int(fold.index), "head": head.numpy(), "probe": probe.numpy(),
                         "label": truth})
    print(f"{dataset}: {time.time() - t0:.0f} s", flush=True)
    return rows


DUMP_KEYS = ("dataset", "fold", "head", "probe", "label")
"""One test fold in a `--dump` file: its dataset, fold index, the head's and the probe's (N, C) class probabilities and
the (N,) true labels, stored as `{key}_{i}` arrays for the i-th fold."""


def write_dump(path: Path, folds: list[dict]) -> None:
    np.savez(path, **{f"{k}_{i}": (np.asarray(str(d[k])) if k == "dataset" else np.asarray(d[k]))
                      for i, d in enumerate(folds) for k in DUMP_KEYS})


def read_dump(path: Path | str) -> list[dict]:
    """`write_dump`'s folds, in order (bench/fusion_rules.py and bench/probe_inputs.py read them)."""
    z = np.load(path)
    n = sum(1 for k in z.files if k.startswith("dataset_"))
    return [{k: (str(z[f"{k}_{i}"]) if k == "dataset" else int(z[f"{k}_{i}"]) if k == "fold" else z[f"{k}_{i}"])
             for k in DUMP_KEYS} for i in range(n)]


def mixture(weight: float) -> str:
    return f"probe {weight:g}"


def write(rows: list[dict], out: Path, argv: list[str], weights: list[float]) -> None:
    extra = [mixture(w) for w in weights]
    lines = ["# The head, the linear probe and their mean, fold by fold (issue 31)", "",
             f"`python bench/bench_fusion.py {' '.join(argv)}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}. One training run per dataset (the params file's defaults plus the "
             "overrides above), read three ways: the head alone (`fusion: none`), the probe alone, their mean "
             "(`fusion: probe`). Last-epoch WAR % of each fold's test people.", "",
             "| dataset | fold | head | probe | fused | fused − head |" + "".join(f" {k} |" for k in extra),
             "|---|---|---|---|---|---|" + "---|" * len(extra)]
    for r in rows:
        lines.append(f"| {r['dataset'].removeprefix('bench-')} | {r['fold']} | {r['head']:.1f} | {r['probe']:.1f} | "
                     f"{r['fused']:.1f} | {r['fused'] - r['head']:+.1f} |" + "".join(f" {r[k]:.1f} |" for k in extra))
    keys = ("head", "probe", "fused", *extra)
    lines += ["", "| dataset | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for d in dict.fromkeys(r["dataset"] for r in rows):
        sel = [r for r in rows if r["dataset"] == d]
        cells = [f"{np.mean([r[k] for r in sel]):.1f} ± {np.std([r[k] for r in sel], ddof=1):.1f}" for k in keys]
        lines.append(f"| {d.removeprefix('bench-')} | " + " | ".join(cells) + " |")
    ahead, behind, level, p = sign_test([r["fused"] - r["head"] for r in rows])
    lines += ["", f"Fused against the head alone, over all {len(rows)} folds: ahead on {ahead}, behind on {behind}, "
              f"level on {level} (two-sided sign test p = {p:.4f})."]
    publish(out, "\n".join(lines) + "\n", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_args(ap)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="more parameter overrides")
    ap.add_argument("--weights", default="", help="comma list of the probe's shares to read besides 0.5, e.g. 0.25,0.75")
    ap.add_argument("--dump", type=Path, default=None, help="an .npz of every test video's head and probe probabilities")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fusion.md")
    args = ap.parse_args()
    overrides = [f"train_head.folds={args.folds}", *args.overrides]
    weights = [float(w) for w in args.weights.split(",") if w]
    dump: list[dict] | None = [] if args.dump else None
    found = [r for ds in args.datasets.split(",")
             for r in measure(params_for(args.params, ds), ds, overrides, weights, dump)]
    write(found, args.out, sys.argv[1:], weights)
    if dump is not None:
        write_dump(args.dump, dump)


if __name__ == "__main__":
    main()
