"""Would the fusion's probe do better on another pooling of the frames, or another regularisation? (issue 31)

The probe of `fusion: probe` reads each video's fitted head input mean-pooled over every cached frame
(pipeline/head/fusion.py), logistic regression at C = 1. On transient clips most frames are neutral, so a
pooling that keeps the frames that changed most could serve the probe better. This reads, on the same folds
and beside the same trained heads (a `bench_fusion.py --dump`), the probe and its mean with the head for:

- `mean` (the default), `mean+peakK` (the mean beside the mean of the K frames farthest from the video's
  first tenth, the reference of `two_stream_first`; label-free), `peakK` alone, `mean+std` (the mean beside
  each dimension's std over frames);
- the default mean at C = 0.01, 0.1, 1, 10.

No head is trained: each fold's input transform is fitted on its training rows as train-head fits it.

    python bench/bench_fusion.py ... --dump D.npz        # the heads, once
    python bench/probe_inputs.py --dump D.npz --params W/params.yaml --datasets A,B --set extract.motion=flow_hog ...
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.head.data import load_training_data  # noqa: E402
from pipeline.head.fusion import ProbeFusion, fuse  # noqa: E402
from pipeline.head.inputs import FIRST_FRAMES_SHARE  # noqa: E402
from pipeline.head.train import fold_run  # noqa: E402
from _tables import params_for  # noqa: E402  (beside this script)
from bench_fusion import read_dump  # noqa: E402


def poolings(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, T, D) fitted head input -> named (N, D') pooled inputs, every one label-free."""
    mean = x.mean(1)
    k0 = max(1, round(FIRST_FRAMES_SHARE * x.shape[1]))  # the first frames `two_stream_first` subtracts
    change = (x - x[:, :k0].mean(1, keepdim=True)).norm(dim=-1)  # (N, T) how far each frame moved
    out = {"mean": mean}
    for k in (15, 30):
        top = change.topk(k, dim=1).indices[..., None].expand(-1, -1, x.shape[-1])
        peak = torch.gather(x, 1, top).mean(1)
        out[f"mean+peak{k}"], out[f"peak{k}"] = torch.cat([mean, peak], 1), peak
    out["mean+std"] = torch.cat([mean, x.std(1)], 1)
    return out


def measure(params: Path, dataset: str, overrides: list[str], heads: dict) -> dict[str, list[tuple[float, float]]]:
    """variant -> per fold (probe WAR, fused WAR at the default share)."""
    cfg = load_config(params, dataset=dataset, overrides=overrides)
    th = dataclasses.replace(cfg.train_head, fusion="none")
    data = load_training_data(cfg, dataset)
    x, labels, n_classes = torch.from_numpy(data.cache.features), data.cache.label, len(data.cache.class_names)
    subjects = np.asarray(data.cache.subject)
    found: dict[str, list[tuple[float, float]]] = {}
    for fold in data.folds:
        head, truth = heads[(dataset, fold.index)]
        if not np.array_equal(labels[fold.test], truth):
            raise SystemExit(f"{dataset} fold {fold.index}: the dump's test videos are not this fold's")
        inp = fold_run(th, x, labels, subjects, fold, n_classes, "ceflnet", seed=th.seed, epochs=1).model.input.eval()
        with torch.no_grad():
            xin = torch.cat([inp(x[s:s + 64].float()) for s in range(0, len(x), 64)])
        variants = {name: (p.numpy(), 1.0) for name, p in poolings(xin).items()}
        variants.update({f"mean, C={c:g}": (variants["mean"][0], c) for c in (0.01, 0.1, 10.0)})
        for name, (pooled, c) in variants.items():
            probe = ProbeFusion.fit(pooled[fold.train], labels[fold.train], n_classes, th.seed, C=c)
            probs = probe(torch.from_numpy(pooled[fold.test]))
            fused = fuse(torch.from_numpy(head), probs, th.fusion_weight).numpy()
            found.setdefault(name, []).append((100 * float(np.mean(probs.numpy().argmax(1) == truth)),
                                               100 * float(np.mean(fused.argmax(1) == truth))))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", type=Path, required=True, help="bench_fusion.py --dump of the same datasets and folds")
    ap.add_argument("--params", type=Path, action="append", required=True)
    ap.add_argument("--datasets", required=True)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    heads = {(f["dataset"], f["fold"]): (f["head"], f["label"]) for f in read_dump(args.dump)}
    overrides = [f"train_head.folds={args.folds}", *args.overrides]
    datasets = args.datasets.split(",")
    table = {ds: measure(params_for(args.params, ds), ds, overrides, heads) for ds in datasets}
    names = list(next(iter(table.values())))
    print("| probe input | " + " | ".join(f"{d.removeprefix('bench-')} probe / fused" for d in datasets) + " |")
    print("|---|" + "---|" * len(datasets))
    for name in names:
        cells = [f"{np.mean([p for p, _ in table[d][name]]):.1f} / {np.mean([f for _, f in table[d][name]]):.1f}"
                 for d in datasets]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
