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

`--ceiling` adds what no option can use: the mean over the frames inside each video's annotated apex span (the
manifest's `apex_start`/`apex_end`), over the whole input, its changing stream, and each block of that stream
(the backbone, and the `extract.motion` blocks: flow, HOG, mesh). It is the probe's reading with perfect
localisation: whether finding the expression or reading it is what a column lacks. Without `--dump` only the probe
is scored.

    python bench/bench_fusion.py ... --dump D.npz        # the heads, once
    python bench/probe_inputs.py --dump D.npz --params W/params.yaml --datasets A,B --set extract.motion=flow_hog ...
    python bench/probe_inputs.py --ceiling --params W/params.yaml --datasets A --set extract.motion=flow_hog_mesh ...
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
from pipeline.head.inputs import FIRST_FRAMES_SHARE, is_two_stream  # noqa: E402
from pipeline.head.train import fold_run  # noqa: E402
from pipeline.motion import has_mesh, motion_dim  # noqa: E402
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


def blocks(motion: str, width: int) -> dict[str, slice]:
    """The changing stream's blocks (`width` wide): the backbone's features, then extract's motion blocks in
    `motion_features`' order (flow, HOG, mesh), their widths from `motion_dim` of the one-block motions."""
    mesh = motion_dim("mesh") * has_mesh(motion)
    flow = motion_dim("flow") * motion.startswith("flow")  # the `flow*` motions (pipeline/motion.py)
    hog = motion_dim(motion) - flow - mesh
    edges, out, start = [("backbone", width - motion_dim(motion)), ("flow", flow), ("HOG", hog), ("mesh", mesh)], {}, 0
    for name, n in edges:
        if n:
            out[name] = slice(start, start + n)
        start += n
    return out


def apex_mean(x: torch.Tensor, data) -> torch.Tensor:
    """(N, T, D) -> (N, D): the mean over each video's cached frames inside its annotated apex span (labels'
    annotations: a ceiling, never an option)."""
    spans = [a or (-1, -1) for a in data.apex]
    lo, hi = (torch.tensor([s[i] for s in spans])[:, None] for i in (0, 1))
    frames = torch.from_numpy(np.asarray(data.cache.frame_index))
    inside = ((frames >= lo) & (frames <= hi)).float()
    if (inside.sum(1) == 0).any():
        raise SystemExit("--ceiling needs an apex span (manifest apex_start/apex_end) inside every cached video")
    return (x * inside[..., None]).sum(1) / inside.sum(1, keepdim=True)


def fitted_input(th, x: torch.Tensor, data, fold) -> torch.Tensor:
    """The fold's head input transform, fitted on its training rows as train-head fits it, applied to every video."""
    inp = fold_run(th, x, data.cache.label, np.asarray(data.cache.subject), fold, len(data.cache.class_names),
                   "ceflnet", seed=th.seed, epochs=1).model.input.eval()
    with torch.no_grad():
        return torch.cat([inp(x[s:s + 64].float()) for s in range(0, len(x), 64)])


def ceiling(x: torch.Tensor, data, motion: str, two_stream: bool) -> dict[str, torch.Tensor]:
    """Means over each video's annotated apex frames: the whole input, its changing stream and that stream's blocks."""
    apex = apex_mean(x, data)
    change = apex[:, :x.shape[-1] // 2] if two_stream else apex
    out = {"apex (annotated)": apex, "apex, changing stream": change}
    out.update({f"apex, {name}": change[:, sl] for name, sl in blocks(motion, change.shape[1]).items()})
    return out


def measure(params: Path, dataset: str, overrides: list[str], heads: dict | None,
            with_ceiling: bool = False) -> dict[str, list[tuple[float, float]]]:
    """variant -> per fold (probe WAR, fused WAR at the default share; nan without `heads`)."""
    cfg = load_config(params, dataset=dataset, overrides=overrides)
    th = dataclasses.replace(cfg.train_head, fusion="none")
    data = load_training_data(cfg, dataset)
    x, labels, n_classes = torch.from_numpy(data.cache.features), data.cache.label, len(data.cache.class_names)
    found: dict[str, list[tuple[float, float]]] = {}
    for fold in data.folds:
        head, truth = heads[(dataset, fold.index)] if heads else (None, labels[fold.test])
        if not np.array_equal(labels[fold.test], truth):
            raise SystemExit(f"{dataset} fold {fold.index}: the dump's test videos are not this fold's")
        xin = fitted_input(th, x, data, fold)
        variants = {name: (p.numpy(), 1.0) for name, p in poolings(xin).items()}
        variants.update({f"mean, C={c:g}": (variants["mean"][0], c) for c in (0.01, 0.1, 10.0)})
        if with_ceiling:
            apex = ceiling(xin, data, cfg.extract.motion, is_two_stream(th.center))
            variants.update({n: (p.numpy(), 1.0) for n, p in apex.items()})
        for name, (pooled, c) in variants.items():
            probe = ProbeFusion.fit(pooled[fold.train], labels[fold.train], n_classes, th.seed, C=c)
            probs = probe(torch.from_numpy(pooled[fold.test]))
            fused = fuse(torch.from_numpy(head), probs, th.fusion_weight).numpy() if heads else None
            found.setdefault(name, []).append((100 * float(np.mean(probs.numpy().argmax(1) == truth)),
                                               np.nan if fused is None else 100 * float(np.mean(fused.argmax(1) == truth))))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", type=Path, help="bench_fusion.py --dump of the same datasets and folds (else the probe only)")
    ap.add_argument("--ceiling", action="store_true", help="add the annotated-apex poolings (a ceiling, not an option)")
    ap.add_argument("--params", type=Path, action="append", required=True)
    ap.add_argument("--datasets", required=True)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    heads = {(f["dataset"], f["fold"]): (f["head"], f["label"]) for f in read_dump(args.dump)} if args.dump else None
    overrides = [f"train_head.folds={args.folds}", *args.overrides]
    datasets = args.datasets.split(",")
    table = {ds: measure(params_for(args.params, ds), ds, overrides, heads, args.ceiling) for ds in datasets}
    names = list(next(iter(table.values())))
    print("| probe input | " + " | ".join(f"{d.removeprefix('bench-')} probe" + (" / fused" if heads else "") for d in datasets) + " |")
    print("|---|" + "---|" * len(datasets))
    for name in names:
        cells = [f"{np.mean([p for p, _ in table[d][name]]):.1f} ± {np.std([p for p, _ in table[d][name]]):.1f}"
                 + (f" / {np.mean([f for _, f in table[d][name]]):.1f}" if heads else "") for d in datasets]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
