"""5-point similarity alignment to the ArcFace template (what insightface's `norm_crop` does).

We solve the similarity transform ourselves (Umeyama, 1991) instead of calling scikit-image's
`SimilarityTransform.estimate`, which insightface uses and which is deprecated in skimage 0.26.
`margin` widens the crop around the same face (0.25 ≈ Emotion-FAN's 25 % padding, docs/reference.md §4).
"""
from __future__ import annotations

import cv2
import numpy as np

# ArcFace 112x112 template: right eye, left eye (image left/right), nose, mouth corners.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)

# Default `extract.margin` per backbone family, used when the parameter is null. The plug-ins'
# values live in their modules (timm_plugin.MARGIN, clip_plugin.MARGIN); they are repeated here,
# beside the crop they shape, so detect's QC sheet draws the crop without importing the backbones
# (which would make every backbone edit part of detect's code hash). A test keeps them equal.
DEFAULT_MARGIN = {"resnet18": 0.0, "retinaface_mnet": 0.0, "timm": 0.0, "open_clip": 0.25}


def builtin_margin(backbone: str) -> float:
    """The default margin of a backbone name (`timm:...` and `open_clip:...` by their library)."""
    return DEFAULT_MARGIN.get(backbone.partition(":")[0], 0.0)


def template(size: int = 224, margin: float = 0.0) -> np.ndarray:
    """The template scaled to `size` as insightface scales it, shrunk towards the centre by 1/(1+margin)."""
    if size % 112 == 0:
        dst = ARCFACE_112 * (size / 112.0)
    else:  # insightface's convention for multiples of 128
        ratio = size / 128.0
        dst = ARCFACE_112 * ratio
        dst[:, 0] += 8.0 * ratio
    centre = np.array([size / 2.0, size / 2.0])
    return centre + (dst - centre) / (1.0 + margin)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src → dst; 2x3 matrix."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / s.var(0).sum()
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def align(frame_rgb: np.ndarray, landmarks5: np.ndarray, size: int = 224, margin: float = 0.0) -> np.ndarray:
    """Aligned face crop, uint8 (size, size, 3), from a frame and its 5 landmarks (original pixels)."""
    landmarks5 = np.asarray(landmarks5, np.float64).reshape(5, 2)
    m = similarity(landmarks5, template(size, margin))
    return cv2.warpAffine(frame_rgb, m, (size, size), borderValue=0.0)
