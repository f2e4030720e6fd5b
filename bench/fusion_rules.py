"""Other fixed rules for mixing the head with the linear probe, on `bench_fusion.py --dump` files (issue 31).

Every rule is fixed (nothing fitted to the folds it is scored on) and reads the same heads and probes, so the
table compares rules and nothing else: last-epoch WAR % per dataset, mean over folds, and the worst column.

    python bench/bench_fusion.py ... --dump W.npz      # one training run, every test video's probabilities
    python bench/fusion_rules.py W.npz [more.npz ...]  # the table (bench/results/fusion_weight.md)
"""
from __future__ import annotations

import sys
from collections import defaultdict
from typing import Callable

import numpy as np

from bench_fusion import read_dump  # beside this script: the dump's one reader, next to its writer

Rule = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1))).sum(1, keepdims=True)


RULES: dict[str, Rule] = {
    "head": lambda h, p: h,
    "probe": lambda h, p: p,
    "mean": lambda h, p: (h + p) / 2,  # fusion_weight 0.5, the section's
    "geometric mean": lambda h, p: np.sqrt(h * p),
    "each by its top probability": lambda h, p: h * h.max(1, keepdims=True) + p * p.max(1, keepdims=True),
    "the more confident one": lambda h, p: np.where(_entropy(h) <= _entropy(p), h, p),
    "element-wise maximum": lambda h, p: np.maximum(h, p),
}


def main(paths: list[str]) -> None:
    folds = [f for path in paths for f in read_dump(path)]
    war: dict[tuple[str, str], list[float]] = defaultdict(list)
    for f in folds:
        for name, rule in RULES.items():
            war[(f["dataset"], name)].append(100 * float(np.mean(rule(f["head"], f["probe"]).argmax(1) == f["label"])))
    datasets = list(dict.fromkeys(f["dataset"] for f in folds))
    print("| rule | " + " | ".join(d.removeprefix("bench-") for d in datasets) + " | worst |")
    print("|---|" + "---|" * (len(datasets) + 1))
    for name in RULES:
        means = [float(np.mean(war[(d, name)])) for d in datasets]
        print(f"| {name} | " + " | ".join(f"{m:.1f}" for m in means) + f" | {min(means):.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
