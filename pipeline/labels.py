"""Each dataset adapter's default class set (its `default_classes`), by adapter name.

A table apart from the adapters: extract orders the classes of a dataset with no `classes:` by it
without importing the adapter registry, which would make every dataset's module, and the demo's
generator, a code dependency of extract (`pipeline/registry.py`). `Adapter` subclasses take their
`default_classes` from here by name."""
from __future__ import annotations

BASIC6 = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
BASIC7 = BASIC6 + ("neutral",)
CLASSES11 = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "contempt", "anxiety",
             "helplessness", "disappointment", "neutral")
"""MAFW's eleven classes, in its own order."""

DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {
    "afew": BASIC7, "bu4dfe": BASIC6, "bu3dfe": BASIC6, "ckplus": BASIC6 + ("contempt",), "demo": BASIC6,
    "dfew": BASIC7, "ferv39k": BASIC7, "mafw": CLASSES11, "mmi": BASIC6, "oulu": BASIC6,
}
"""Adapter name (aliases included) -> class set; `folder` and `csv` have none (their labels decide)."""
