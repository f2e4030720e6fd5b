"""Where each stage's outputs live for a dataset (docs/cache.md): the paths `pipeline/registry.py` defines,
resolved under a data root (`DatasetLayout`) and a results root (`ResultsLayout`). The per-fold file names
inside an output folder (`fold-<k>`) are decided here, once."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import registry

DATA, RESULTS = "{data}/", "{results}/"


def resolve(template: str, cfg, dataset: str | None) -> Path:
    """A registry path (`{data}/faces.h5`, `{results}/metrics.json`) for this dataset."""
    if template.startswith(DATA):
        return cfg.dataset_dir(dataset) / template[len(DATA):]
    if template.startswith(RESULTS):
        return cfg.results_dir(dataset) / template[len(RESULTS):]
    raise ValueError(f"registry path must start with {DATA} or {RESULTS}, got {template!r}")


def _under(root: Path, template: str, prefix: str) -> Path:
    assert template.startswith(prefix), template
    return root / template[len(prefix):]


@dataclass(frozen=True)
class DatasetLayout:
    root: Path
    """`<data_root>/<dataset>/`"""

    def _at(self, template: str) -> Path:
        return _under(self.root, template, DATA)

    @property
    def manifest(self) -> Path:
        return self._at(registry.MANIFEST)

    @property
    def faces(self) -> Path:
        return self._at(registry.FACES)

    @property
    def frames(self) -> Path:
        """resample's chosen frame numbers per video (`<id>/frame_index`)."""
        return self._at(registry.FRAMES)

    @property
    def failures(self) -> Path:
        return self._at(registry.FAILURES)

    @property
    def features(self) -> Path:
        return self._at(registry.FEATURES)

    @property
    def parts(self) -> Path:
        """Per-video detect results, each written atomically; the resume state of detect."""
        return self._at(registry.DETECT_PARTS)

    @property
    def qc(self) -> Path:
        return self._at(registry.QC)

    @property
    def contact_sheet(self) -> Path:
        return self._at(registry.CONTACT_SHEET)

    @property
    def state(self) -> Path:
        """One JSON per finished stage: the signature of what produced its outputs."""
        return self.root / registry.STATE_DIR

    @property
    def finetuned(self) -> Path:
        """finetune's per-fold caches (`fold-<k>/` inside), beside the frozen shards."""
        return self._at(registry.FINETUNED)

    def fold_features(self, fold: int) -> Path:
        """Fold k's cache from fold k's adapted backbone (finetune writes it, train-head reads it)."""
        return self.finetuned / f"fold-{fold}"

    @property
    def backbones(self) -> Path:
        """finetune's adapted backbones, one per fold."""
        return self._at(registry.BACKBONES)

    def backbone(self, fold: int) -> Path:
        """Fold k's adapted backbone (finetune writes it, train-head records it for `pipeline predict`)."""
        return self.backbones / f"backbone-fold-{fold}.pt"

    def backbone_resume(self, fold: int) -> Path:
        """Model, optimiser and sampler state after the last completed epoch of an unfinished fold."""
        return self.backbones / f"backbone-fold-{fold}.resume.pt"

    @property
    def crops_pack(self) -> Path:
        """finetune's pack of the kept crops (a cache of its input)."""
        return self._at(registry.CROPS_PACK)


@dataclass(frozen=True)
class ResultsLayout:
    root: Path
    """`<results_root>/<dataset>/`"""

    def _at(self, template: str) -> Path:
        return _under(self.root, template, RESULTS)

    @property
    def metrics(self) -> Path:
        return self._at(registry.METRICS)

    @property
    def provenance(self) -> Path:
        return self._at(registry.PROVENANCE)

    @property
    def history(self) -> Path:
        return self._at(registry.HISTORY)

    def fold_history(self, fold: int) -> Path:
        return self.history / f"fold-{fold}.csv"

    @property
    def training_curves(self) -> Path:
        return self._at(registry.TRAINING_CURVES)

    @property
    def predictions(self) -> Path:
        return self._at(registry.PREDICTIONS)

    @property
    def heads(self) -> Path:
        """train-head's fold heads."""
        return self._at(registry.HEADS)

    def head(self, fold: int) -> Path:
        return self.heads / f"fold-{fold}.pt"

    @property
    def report(self) -> Path:
        return self._at(registry.REPORT)

    @property
    def confusion(self) -> Path:
        return self._at(registry.CONFUSION)

    @property
    def activation_maps(self) -> Path:
        return self._at(registry.ACTIVATION_MAPS)

    @property
    def tsne(self) -> Path:
        return self._at(registry.TSNE)

    @property
    def ablation_json(self) -> Path:
        return self._at(registry.ABLATION_JSON)

    @property
    def ablation_md(self) -> Path:
        return self._at(registry.ABLATION_MD)


def layout_for(cfg, dataset: str | None = None) -> DatasetLayout:
    return DatasetLayout(cfg.dataset_dir(dataset))


def results_for(cfg, dataset: str | None = None) -> ResultsLayout:
    return ResultsLayout(cfg.results_dir(dataset))
