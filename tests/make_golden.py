"""Regenerate the golden features guarding against silent numerical drift.

    python tests/make_golden.py

Run it only when a change to alignment or the backbone is intended, and say so in the commit.
The features: `single_face.mp4`, frames 0, 10, ..., 70 with landmarks from the shipped detector
at det_size 480, aligned 224x224, ResNet-18 with seeded random weights (seed 0), ImageNet scaling.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
GOLDEN = HERE / "data" / "golden" / "single_face_resnet18_random_seed0.npy"
FRAMES = list(range(0, 72, 10))


def golden_features() -> np.ndarray:
    from pipeline.align import align
    from pipeline.config import ExtractConfig
    from pipeline.detector import RetinaFaceDetector
    from pipeline.features import build_extractor
    from pipeline.video import read_frames

    frames = read_frames(HERE / "data" / "videos" / "single_face.mp4", FRAMES)
    det = RetinaFaceDetector(det_size=480)
    crops = np.stack([align(frames[i], det.detect([frames[i]])[0].landmarks[0]) for i in FRAMES])
    extractor = build_extractor(ExtractConfig(weights="random", seed=0, device="cpu"))
    return extractor(crops)


if __name__ == "__main__":
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    np.save(GOLDEN, golden_features().astype(np.float32))
    print(f"wrote {GOLDEN}")
