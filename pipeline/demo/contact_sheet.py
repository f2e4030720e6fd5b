"""`docs/demo_expressions.png`: one row per demo identity, columns neutral + each class at its apex.

    python -m pipeline.demo.contact_sheet [docs/demo_expressions.png]

The apex images are rendered without the per-video distractors (no head motion, blink or lighting
drift) and at nominal strength, so the sheet shows exactly what each class's warp does.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.demo.generate import CLASSES, VideoPlan, expression_layers, load_models, render_frames

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "demo_expressions.png"


def apex_image(face, label: str | None, size: int) -> np.ndarray:
    """One still of `face`: neutral when `label` is None, else the class at full intensity."""
    h, w = face.image.shape[:2]
    if label is None:
        field, shade = np.zeros((h, w, 2), np.float32), np.zeros((h, w), np.float32)
    else:
        field, shade = expression_layers(face, label)
    still = VideoPlan(intensity=np.ones(1), blink=np.zeros(1), motion=np.zeros((1, 4)), gain=np.ones(1),
                      tilt=np.zeros((1, 2)), amplitude=1.0)
    return next(render_frames(face, field, shade, still, size))


def contact_sheet(size: int = 192, classes: tuple[str, ...] = CLASSES, all_photos: bool = False) -> np.ndarray:
    """The sheet as a BGR image: a header row of class names, then one row per identity (photo)."""
    rows = []
    for photos in load_models():
        for face in (photos if all_photos else photos[:1]):
            rows.append(np.hstack([apex_image(face, None, size)] + [apex_image(face, c, size) for c in classes]))
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
    sheet = cv2.cvtColor(contact_sheet(args.size, all_photos=args.all_photos), cv2.COLOR_BGR2RGB)
    # a 256-colour palette keeps the committed PNG small (~0.5 MB instead of ~1.7 MB)
    Image.fromarray(sheet).quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
