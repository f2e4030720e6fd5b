"""Frame folders: a video given as a folder of image files, read in natural order.

Apart from the adapters so that decoding (pipeline/video.py) does not import the adapter registry,
and with it every dataset's module (code deps, pipeline/registry.py)."""
from __future__ import annotations

import re
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def sorted_frames(folder: Path) -> list[Path]:
    """Image files of a frame folder in natural order (`2.jpg` before `10.jpg`)."""

    def key(p: Path) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=key)
