"""Head training throughput: the resident-cache loop (pipeline.head.train) vs a naive per-sample
DataLoader loop, on a synthetic cache of a real dataset's size, measured in the same run.

    python bench/bench_head.py                       # MMI size: 205 videos, 30 subjects, 10 folds x 120 epochs, CPU
    python bench/bench_head.py --threads 1 --precision bf16
    python bench/bench_head.py --dfew --batch-size 256   # DFEW size (12,059 videos, 5 folds) on the GPU

The full protocol is timed for our loop; the naive loop runs `--naive-epochs` epochs of one fold and
is extrapolated to the same protocol (it is the baseline, not the product).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import TrainHeadConfig
from pipeline.head.baselines import build_head
from pipeline.head.train import cross_validate, make_folds, resolve_device, set_threads


def synthetic(n: int, n_subjects: int, dim: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, 105, dim), dtype=np.float32).astype(np.float16)
    return feats, rng.integers(0, n_classes, n), [f"S{i % n_subjects:03d}" for i in range(n)]


class NaiveDataset(torch.utils.data.Dataset):
    """What the authors' NewDataset does per sample, on cached features: Python sampling, one video at a time."""

    def __init__(self, feats: np.ndarray, labels: np.ndarray, rows: np.ndarray):
        self.feats, self.labels, self.rows = feats, labels, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        v = self.feats[self.rows[i]]
        first = random.randint(0, 29)
        clips = []
        for c in range(7):
            picks = sorted(random.sample(range(15), 5))
            clips.append(np.stack([v[first + 10 * c + p] for p in picks]).astype(np.float32))
        return torch.from_numpy(np.stack(clips)), int(self.labels[self.rows[i]])


def naive_epoch_seconds(cfg: TrainHeadConfig, feats, labels, rows, n_classes: int, epochs: int, device) -> float:
    model = build_head(cfg, feats.shape[-1], n_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = torch.utils.data.DataLoader(NaiveDataset(feats, labels, rows), batch_size=cfg.batch_size, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)).logits, y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (time.perf_counter() - start) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dfew", action="store_true", help="DFEW size (12,059 videos, 5 folds), GPU")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--naive-epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--variant", default="paper", choices=["paper", "authors"])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    n, n_subj, k, n_cls = (12059, 1000, 5, 7) if args.dfew else (205, 30, 10, 6)
    cfg = TrainHeadConfig(folds=k, epochs=args.epochs, batch_size=args.batch_size, threads=args.threads,
                          precision=args.precision, variant=args.variant, device=args.device)
    device = resolve_device(cfg.device)
    set_threads(cfg.threads, device)
    feats, labels, subjects = synthetic(n, n_subj, 512, n_cls)
    folds = make_folds(labels, subjects, k=k, seed=0)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    cross_validate(cfg, feats, labels, folds, n_cls, device=device, desc="ours")
    ours = time.perf_counter() - start
    epoch_ours = ours / (k * cfg.epochs)
    naive = naive_epoch_seconds(dataclasses.replace(cfg), feats, labels, folds[0].train, n_cls, args.naive_epochs, device)
    naive_total = naive * k * cfg.epochs  # extrapolated: includes no per-epoch test pass, so it flatters naive
    print(f"\n{'MMI' if not args.dfew else 'DFEW'}-size cache: {n} videos x 105 x 512 fp16, {k} folds x {cfg.epochs} "
          f"epochs, batch {cfg.batch_size}, {args.variant} head, {args.precision}, device {device}, "
          f"torch threads {torch.get_num_threads()}, load avg at start {load:.2f}")
    print("| loop | s / epoch (one fold) | full protocol, s | speed-up |\n|---|---|---|---|")
    print(f"| resident cache, batched gather (ours, incl. per-epoch test pass) | {epoch_ours:.3f} | {ours:.1f} | "
          f"{naive_total / ours:.1f}x |")
    print(f"| naive: DataLoader + per-sample Python sampling ({args.naive_epochs} epochs, extrapolated) | "
          f"{naive:.3f} | {naive_total:.1f} | 1.0x |")


if __name__ == "__main__":
    main()
