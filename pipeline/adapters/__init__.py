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


def _register_optional() -> None:
    """Dataset modules written later register here; each is a small file in this package."""
    import importlib

    for module, cls, aliases in (
        ("mmi", "MMIAdapter", ()), ("bu4dfe", "BU4DFEAdapter", ("bu3dfe",)), ("afew", "AFEWAdapter", ()),
        ("dfew", "DFEWAdapter", ()), ("ckplus", "CKPlusAdapter", ()), ("oulu", "OuluAdapter", ()),
        ("ferv39k", "FERV39kAdapter", ()), ("mafw", "MAFWAdapter", ()), ("demo", "DemoAdapter", ()),
    ):
        try:
            mod = importlib.import_module(f"pipeline.adapters.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"pipeline.adapters.{module}":
                raise
            continue
        klass = getattr(mod, cls)
        for name in (klass.name, *aliases):
            ADAPTERS[name] = klass


_register_optional()


def make_adapter(name: str, root: Path, classes=None, fps: float = 25.0, options: dict | None = None) -> Adapter:
    return ADAPTERS[name](root, classes=classes, fps=fps, options=options)


__all__ = ["ADAPTERS", "Adapter", "Listing", "VideoEntry", "canonical_label", "make_adapter"]
