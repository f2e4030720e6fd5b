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

    for module, cls, aliases in (
        ("mmi", "MMIAdapter", ()), ("bu4dfe", "BU4DFEAdapter", ("bu3dfe",)), ("afew", "AFEWAdapter", ()),
        ("dfew", "DFEWAdapter", ()), ("ckplus", "CKPlusAdapter", ()), ("oulu", "OuluAdapter", ()),
        ("ferv39k", "FERV39kAdapter", ()), ("mafw", "MAFWAdapter", ()), ("demo", "DemoAdapter", ()),
    ):
        klass = getattr(importlib.import_module(f"pipeline.adapters.{module}"), cls)
        for name in (klass.name, *aliases):
            ADAPTERS[name] = klass


_register()


def make_adapter(name: str, root: Path, classes=None, fps: float = 25.0, options: dict | None = None) -> Adapter:
    return ADAPTERS[name](root, classes=classes, fps=fps, options=options)


__all__ = ["ADAPTERS", "Adapter", "Listing", "VideoEntry", "canonical_label", "make_adapter"]
