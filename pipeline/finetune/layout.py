"""Where finetune's outputs live for a dataset, beside `pipeline/layout.py`'s (docs/cache.md).

Kept apart from `DatasetLayout` on purpose: every stage imports pipeline/layout.py, so an edit there
changes every stage's code hash and recomputes detect and extract on whole datasets (pipeline/registry.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.head.finetuned import backbone_checkpoint, finetuned_dir, fold_cache_dir
from pipeline.layout import DatasetLayout


@dataclass(frozen=True)
class FinetuneLayout:
    data: DatasetLayout

    @property
    def finetuned(self) -> Path:
        """The per-fold caches' folder, `features/finetuned/` (fold-<k>/ inside)."""
        return finetuned_dir(self.data)

    def fold_features(self, fold: int) -> Path:
        return fold_cache_dir(self.data, fold)  # train-head reads it there

    @property
    def checkpoints(self) -> Path:
        """The adapted backbones, one per fold."""
        return self.data.root / "checkpoints"

    def checkpoint(self, fold: int) -> Path:
        return backbone_checkpoint(self.data, fold)  # defined beside the per-fold caches; train-head reads it

    def resume(self, fold: int) -> Path:
        """Model, optimiser and sampler state after the last completed epoch of an unfinished fold."""
        return self.checkpoints / f"backbone-fold-{fold}.resume.pt"


def finetune_layout(data: DatasetLayout) -> FinetuneLayout:
    return FinetuneLayout(data)
