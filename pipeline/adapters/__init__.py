"""Dataset adapters: name → class. Each named dataset is one small module."""
from __future__ import annotations

from pathlib import Path

from pipeline.adapters.base import Adapter, Listing, VideoEntry, canonical_label
from pipeline.adapters.csvlist import CsvAdapter
from pipeline.adapters.folder import FolderAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    FolderAdapter.name: FolderAdapter,
    CsvAdapter.name: CsvAdapter,
}


def _register() -> None:
    """Every dataset module is imported unconditionally: a renamed or broken module fails loudly here
    instead of its datasets vanishing from `pipeline datasets` (issue 13)."""
    import importlib

    # Full module names: the code dependencies of a stage follow them (pipeline/registry.py).
    for module, cls, aliases in (
        ("pipeline.adapters.mmi", "MMIAdapter", ()), ("pipeline.adapters.bu4dfe", "BU4DFEAdapter", ("bu3dfe",)),
        ("pipeline.adapters.afew", "AFEWAdapter", ()), ("pipeline.adapters.dfew", "DFEWAdapter", ()),
        ("pipeline.adapters.ckplus", "CKPlusAdapter", ()), ("pipeline.adapters.oulu", "OuluAdapter", ()),
        ("pipeline.adapters.ferv39k", "FERV39kAdapter", ()), ("pipeline.adapters.mafw", "MAFWAdapter", ()),
        ("pipeline.adapters.demo", "DemoAdapter", ()),
    ):
        klass = getattr(importlib.import_module(module), cls)
        for name in (klass.name, *aliases):
            ADAPTERS[name] = klass


_register()


def make_adapter(name: str, root: Path, classes=None, fps: float = 25.0, options: dict | None = None) -> Adapter:
    return ADAPTERS[name](root, classes=classes, fps=fps, options=options)


__all__ = ["ADAPTERS", "Adapter", "Listing", "VideoEntry", "canonical_label", "make_adapter"]
