"""`docs/demo_expressions.png`: one row per demo identity, columns neutral + each class at its apex.

    python -m pipeline.demo.contact_sheet [docs/demo_expressions.png]

The apex images are rendered without the per-video distractors (no head motion, blink or lighting
drift) and at nominal strength, so the sheet shows exactly what each class's warp does.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from pipeline.demo.generate import CLASSES, VideoPlan, expression_layers, load_models, render_frames

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "demo_expressions.png"


Layers = Callable[[object, str], tuple[np.ndarray, np.ndarray]]
"""(face, label) -> (backward field, shade) at the apex: a rig (default: generate.expression_layers)."""


def apex_image(face, label: str | None, size: int, layers: Layers | None = None) -> np.ndarray:
    """One still of `face`: neutral when `label` is None, else the class at full intensity."""
    h, w = face.image.shape[:2]
    if label is None:
        field, shade = np.zeros((h, w, 2), np.float32), np.zeros((h, w), np.float32)
    else:
        field, shade = (layers or expression_layers)(face, label)
    still = VideoPlan(intensity=np.ones(1), blink=np.zeros(1), motion=np.zeros((1, 4)), gain=np.ones(1),
                      tilt=np.zeros((1, 2)), amplitude=1.0)
    return next(render_frames(face, field, shade, still, size))


def contact_sheet(size: int = 192, classes: tuple[str, ...] = CLASSES, all_photos: bool = False,
                  layers: Layers | None = None) -> np.ndarray:
    """The sheet as a BGR image: a header row of class names, then one row per identity (photo)."""
    rows = []
    for photos in load_models():
        for face in (photos if all_photos else photos[:1]):
            cells = [apex_image(face, None, size)] + [apex_image(face, c, size, layers) for c in classes]
            rows.append(np.hstack(cells))
    header = np.full((28, size * (len(classes) + 1), 3), 255, np.uint8)
    for j, name in enumerate(("neutral",) + tuple(classes)):
        cv2.putText(header, name, (j * size + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([header] + rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=DEFAULT_OUT)
    parser.add_argument("--size", type=int, default=176)
    parser.add_argument("--all-photos", action="store_true", help="one row per photo, not per identity")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_png(contact_sheet(args.size, all_photos=args.all_photos), args.out)
    print(args.out)


def save_png(image_bgr: np.ndarray, out: Path) -> None:
    """Save a sheet; a 256-colour palette keeps the committed PNG small (~0.5 MB instead of ~1.7 MB)."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


if __name__ == "__main__":
    main()
