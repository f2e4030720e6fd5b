"""Where each stage's outputs live for a dataset (docs/cache.md); written here once."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetLayout:
    root: Path
    """`<data_root>/<dataset>/`"""

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def faces(self) -> Path:
        return self.root / "faces.h5"

    @property
    def frames(self) -> Path:
        """resample's chosen frame numbers per video (`<id>/frame_index`)."""
        return self.root / "frames.h5"

    @property
    def failures(self) -> Path:
        return self.root / "failures.csv"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def parts(self) -> Path:
        """Per-video detect results, each written atomically; the resume state of detect."""
        return self.root / ".detect-parts"

    @property
    def qc(self) -> Path:
        return self.root / "qc"

    @property
    def state(self) -> Path:
        """One JSON per finished stage: the signature of what produced its outputs."""
        return self.root / ".state"


def layout_for(cfg, dataset: str | None = None) -> DatasetLayout:
    return DatasetLayout(cfg.dataset_dir(dataset))
