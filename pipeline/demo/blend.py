"""More people for the demo: new identities made by morphing two shipped faces (issue 31).

A blend of parents A and B with weight w: B's photo is brought onto A's by the similarity that maps
its 5 landmarks onto A's, both are warped (thin-plate spline through the face rig's control points)
onto the weighted mean face shape, and the two are cross-dissolved inside a soft face oval; outside
it, the background and hair of the nearer parent are kept.

A blend shares its parents' features, so a head that saw a parent in training has seen part of the
blend: the parents and their blends form one *family*, and the demo writes the family as the
`subject` column (the fold key), so no identity leaks across folds.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.demo.face import FaceFrame, control_points, tps_backward_field


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity (rotation, scale, translation) taking the points `src` onto `dst`, least squares
    (Umeyama 1991); every point counts, unlike a robust estimator that may drop two of five."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s)
    r = u @ np.diag([1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    scale = float(sig.sum() / (s ** 2).sum())
    return np.hstack([scale * r, (mu_d - scale * r @ mu_s)[:, None]])


def _warp_to(image: np.ndarray, points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`image` warped so that its control `points` land on `target` (both (N, 2))."""
    h, w = image.shape[:2]
    field = tps_backward_field(points, target, (h, w))
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(image.astype(np.float32), gx + field[..., 0], gy + field[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT101)


def blend_faces(image_a: np.ndarray, landmarks_a: np.ndarray, image_b: np.ndarray, landmarks_b: np.ndarray,
                weight: float) -> np.ndarray:
    """A new face between A (weight 0) and B (weight 1), in the nearer parent's photo; BGR uint8."""
    if not 0 < weight < 1:
        raise ValueError(f"blend weight must be strictly between 0 and 1, got {weight}")
    if weight > 0.5:  # the far parent is the one warped: the near one's photo stays untouched
        return _blend(image_b, landmarks_b, image_a, landmarks_a, 1 - weight)
    return _blend(image_a, landmarks_a, image_b, landmarks_b, weight)


def _blend(image_a: np.ndarray, landmarks_a: np.ndarray, image_b: np.ndarray, landmarks_b: np.ndarray,
           weight: float) -> np.ndarray:
    """`blend_faces` in A's photo (weight <= 0.5)."""
    h, w = image_a.shape[:2]
    m = _similarity(landmarks_b, landmarks_a)
    b_on_a = cv2.warpAffine(image_b, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    lm_b = landmarks_b @ m[:, :2].T + m[:, 2]
    frame_a, frame_b = FaceFrame.from_landmarks(landmarks_a), FaceFrame.from_landmarks(lm_b)
    _, pts_a = control_points(frame_a)
    _, pts_b = control_points(frame_b)
    mean = (1 - weight) * pts_a + weight * pts_b
    morphed = (1 - weight) * _warp_to(image_a, pts_a, mean) + weight * _warp_to(b_on_a, pts_b, mean)
    # the face oval (forehead to chin, cheek to cheek) takes the morph; the rest is the nearer parent's
    frame = FaceFrame.from_landmarks((1 - weight) * landmarks_a + weight * lm_b)
    centre = frame.origin + 0.45 * frame.d * frame.v
    mask = np.zeros((h, w), np.float32)
    angle = float(np.degrees(np.arctan2(frame.u[1], frame.u[0])))
    cv2.ellipse(mask, tuple(int(c) for c in np.round(centre)), (int(1.05 * frame.d), int(1.45 * frame.d)), angle,
                0, 360, 1.0, -1, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.12 * frame.d)[..., None]
    return np.clip(mask * morphed + (1 - mask) * image_a.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)


def families(names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Parents grouped in consecutive pairs (a lone last name is a family of one)."""
    return [tuple(names[i:i + 2]) for i in range(0, len(names), 2)]


def blend_weights(n: int) -> list[float]:
    """`n` blends per pair, evenly spaced strictly between the parents."""
    return [(j + 1) / (n + 1) for j in range(n)]
