"""The demo's second expression rig: action units on a 68-point face mesh, warped piecewise-affinely.

Independent of the first rig (pipeline/demo/face.py: a thin-plate spline through ~25 control points,
one displacement table per class, dark ellipses and crease lines) in every design choice, so that a
head that learned one rig's artefacts fails on the other:

- geometry: the 68-point iBUG layout (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips
  48-59, inner lips 60-67) as a mean shape in the face frame, placed by a least-squares similarity
  fit to RetinaFace's 5 landmarks, then bent so its eye centres, nose tip (30) and mouth corners
  (48, 54) land on them; plus a few skin points (cheeks, glabella, forehead, under the chin) and
  fixed anchors (hairline, face border, image border);
- warp: piecewise affine over one Delaunay triangulation per photo, cut along the closed lips'
  contact line; every pixel finds its triangle in the moved mesh and takes its source from the same
  barycentric coordinates in the neutral mesh (an opened mouth stretches the contact line);
- expressions: compositions of FACS action units (Ekman, Friesen & Hager 2002, *FACS Manual*), each
  a displacement of mesh points at intensity E; a class is an EMFACS prototype (Friesen & Ekman
  1983) with a variant, per-AU intensities and a left/right asymmetry drawn per video;
- appearance: the mouth opening is the moved inner-lip polygon (dark, with a lighter upper-teeth
  band when AU10/12/25 bare them), wrinkles are soft bands (a crease with a lit bulge beside it).

    python -m pipeline.demo.rig_au [docs/demo_expressions_au.png] [--mesh mesh.png]
"""
from __future__ import annotations

import argparse
import functools
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.spatial import Delaunay

from pipeline.demo.face import FaceFrame

if TYPE_CHECKING:
    from pipeline.demo.generate import FaceModel

# ------------------------------------------------------------------ the mesh

# Mean shape in the face frame (origin = midpoint of the eye centres, x towards the image-right eye,
# y towards the mouth, unit = inter-ocular distance). The proportions are those of the standard
# iBUG-68 mean shape (dlib's, as OpenFace ships it), symmetrised and rounded to 0.01; only the
# image-right half and the midline are written, the rest is mirrored through MIRROR.
_HALF = {
    # jaw: chin (8) to the ear (16)
    8: (0.00, 1.92), 9: (0.29, 1.87), 10: (0.54, 1.70), 11: (0.76, 1.48), 12: (0.95, 1.23),
    13: (1.07, 0.94), 14: (1.13, 0.64), 15: (1.16, 0.32), 16: (1.17, 0.01),
    # brow, inner (22) to outer (26)
    22: (0.19, -0.25), 23: (0.38, -0.33), 24: (0.58, -0.36), 25: (0.78, -0.33), 26: (0.92, -0.22),
    # nose: bridge 27-30 (30 = tip), base 33 (middle) to 35 (wing)
    27: (0.00, -0.02), 28: (0.00, 0.18), 29: (0.00, 0.39), 30: (0.00, 0.59),
    33: (0.00, 0.81), 34: (0.12, 0.77), 35: (0.23, 0.72),
    # eye: inner corner 42, upper lid 43-44, outer corner 45, lower lid 46-47
    42: (0.30, 0.03), 43: (0.42, -0.07), 44: (0.57, -0.07), 45: (0.69, 0.00), 46: (0.58, 0.05),
    47: (0.44, 0.06),
    # outer lips: upper 51-53, corner 54, lower 55-57
    51: (0.00, 1.02), 52: (0.12, 0.99), 53: (0.29, 1.02), 54: (0.45, 1.09), 55: (0.30, 1.26),
    56: (0.13, 1.34), 57: (0.00, 1.35),
    # inner lips: upper 62-63, corner 64, lower 65-66. Closed: each upper point on its lower partner,
    # on the lips' contact line (the mean shape's gap is the share of open mouths in its data)
    62: (0.00, 1.15), 63: (0.12, 1.135), 64: (0.38, 1.10), 65: (0.12, 1.135), 66: (0.00, 1.15),
}
MIRROR = np.array([*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
                   45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                   54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])
"""iBUG index of each point's mirror image across the face's midline."""

# Skin points the action units move besides the 68 (iBUG has none on the cheek or forehead): name,
# x (image-right side; mirrored when paired), y, paired.
_SKIN = (
    ("cheek", 0.62, 0.55, True),        # malar eminence, pushed up by AU6 and AU12
    ("glabella", 0.00, -0.22, False),   # between the inner brows: AU1 lifts it, AU4 pulls it down
    ("forehead_mid", 0.00, -0.66, False),
    ("forehead", 0.45, -0.70, True),
    ("forehead_out", 0.88, -0.60, True),
    ("submental", 0.00, 2.32, False),   # soft tissue under the chin: follows a jaw drop part way
    ("submental_side", 0.62, 2.12, True),
)
# Fixed anchors: skin that no action unit moves (hairline, outside the face contour), so every warp
# stays local; a frame around the image is added per photo.
_ANCHORS = (
    (0.00, -1.20), (0.55, -1.14), (-0.55, -1.14), (1.08, -0.88), (-1.08, -0.88),
    (1.52, -0.20), (-1.52, -0.20), (1.55, 0.55), (-1.55, 0.55), (1.42, 1.30), (-1.42, 1.30),
    (1.12, 1.98), (-1.12, 1.98), (0.55, 2.75), (-0.55, 2.75), (0.00, 2.95),
)
FRAME_MARGIN = 0.3
"""The outermost fixed anchors frame the image with this margin (share of its size): a face cut off
by the image border (a chin near the bottom edge) can then move out of the picture."""
MIN_ANCHOR_GAP = 0.12
"""An anchor closer than this (inter-ocular units) to a mesh point is dropped: near-duplicate
vertices make slivers that a small move can turn over."""


def _lip_midpoints() -> np.ndarray:
    """(20, 68) each lip segment's midpoint as a blend of the chain's points around it: Catmull-Rom
    (-1, 9, 9, -1)/16 inside a chain, the quadratic (3, 6, -1)/8 at its ends. They round the mouth's
    outline (8 inner-lip points make a diamond of an open mouth) and move with their neighbours."""
    rows = []
    for chain in _LIP_CHAINS:
        for s in range(len(chain) - 1):
            r = np.zeros(68)
            if s == 0:
                r[list(chain[:3])] = (3 / 8, 6 / 8, -1 / 8)
            elif s == len(chain) - 2:
                r[list(chain[-3:])] = (-1 / 8, 6 / 8, 3 / 8)
            else:
                r[list(chain[s - 1:s + 3])] = (-1 / 16, 9 / 16, 9 / 16, -1 / 16)
            rows.append(r)
    return np.array(rows)


_LIP_CHAINS = ((48, 49, 50, 51, 52, 53, 54), (54, 55, 56, 57, 58, 59, 48), (60, 61, 62, 63, 64), (64, 65, 66, 67, 60))
LIP_MID = _lip_midpoints()


def _template() -> tuple[np.ndarray, dict[str, int]]:
    """(N, 2) neutral mesh in the face frame (68 iBUG points, then the skin points) and skin names."""
    pts = np.full((68, 2), np.nan)
    for i, (x, y) in _HALF.items():
        pts[i] = (x, y)
        pts[MIRROR[i]] = (-x, y)
    names, skin = {}, []
    for name, x, y, paired in _SKIN:
        for side in ((1, -1) if paired else (1,)):
            names[name if side > 0 else f"{name}_l"] = 68 + len(skin)
            skin.append((side * x, y))
    assert not np.isnan(pts).any(), "every iBUG point is given on one side or on the midline"
    return np.vstack([pts, skin]), names  # the lip midpoints (LIP_MID) follow in a fitted mesh


TEMPLATE, SKIN_INDEX = _template()
N_BASE = len(TEMPLATE)
"""The points an AU moves directly (68 + skin); the lip midpoints (LIP_MID) follow, then anchors."""
N_MOVING = N_BASE + len(LIP_MID)
_MID = {(chain[s], chain[s + 1]): N_BASE + k for k, (chain, s) in
        enumerate((c, s) for c in _LIP_CHAINS for s in range(len(c) - 1))}


def _ring(chain: tuple[int, ...]) -> list[int]:
    return [p for a, b in zip(chain[:-1], chain[1:]) for p in (a, _MID[(a, b)])]


MOUTH_HOLE = tuple(_ring(_LIP_CHAINS[2]) + _ring(_LIP_CHAINS[3]))
"""The inner-lip outline, midpoints included, in order (upper lip left to right, lower back)."""

LANDMARK_POINTS = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47), (30,), (48,), (54,))
"""Mesh points that correspond to RetinaFace's 5 landmarks (image-left eye, image-right eye, nose
tip, image-left and image-right mouth corner): an eye is the mean of its 6 points."""


_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
"""Upper and lower inner-lip points that meet on a closed mouth."""
_ALL_LIP_PAIRS = _LIP_PAIRS + tuple((_MID[a], _MID[b]) for a, b in (
    ((60, 61), (67, 60)), ((61, 62), (66, 67)), ((62, 63), (65, 66)), ((63, 64), (64, 65))))


def _landmark_positions(points: np.ndarray) -> np.ndarray:
    """(5, 2) the mesh's counterparts of the 5 landmarks."""
    return np.array([points[list(idx)].mean(0) for idx in LANDMARK_POINTS])


@dataclass(frozen=True)
class FaceMesh:
    """One photo's neutral mesh and its triangulation (see `triangulate`)."""

    points: np.ndarray
    """(N, 2) image coordinates: moving points first (N_MOVING), then the fixed anchors."""
    frame: FaceFrame
    shape: tuple[int, int]
    simplices: np.ndarray
    """(T, 3) point indices of the triangles."""
    orientation: np.ndarray
    """(T,) +1/-1: each triangle's orientation with the mouth opened a little; a move that turns a
    triangle the other way folds the mesh."""
    thin: np.ndarray
    """(T,) bool: triangles under MIN_HEIGHT pixels high with the mouth opened a little, which can
    turn over without anything visible folding (a straight lip edge that arches)."""

    @property
    def d(self) -> float:
        return self.frame.d


FIT_WEIGHTS = np.array([1.0, 1.0, 0.5, 0.25, 0.25])
"""Weights of the 5 landmarks in the similarity fit: the eyes and nose are rigid, the mouth corners
move with expression (a smile in a "neutral" photo lifts them), so they shape the fit least."""


def _residual_weights() -> np.ndarray:
    """(N_BASE, 5) how much of each landmark's fit residual a template point takes.

    Eyes and brows follow their own eye, the nose bridge blends from the eyes to the nose tip, the
    lips blend from the nose (middle, half) to their own mouth corner (corner, all of it): the
    corners carry expression that the lip middle does not. The jaw, cheeks and forehead take a
    rigid-weighted mean.
    """
    w = np.zeros((N_BASE, 5))
    x = TEMPLATE[:, 0]
    side = lambda i: 1 if x[i] > 0 else 0  # noqa: E731  image-right eye = landmark 1
    w[:] = FIT_WEIGHTS / FIT_WEIGHTS.sum()  # default: jaw, skin points
    for i in (*range(17, 27), *range(36, 48)):
        w[i] = 0
        w[i, side(i)] = 1
    for i, to_nose in ((27, 0.0), (28, 0.4), (29, 0.7), (30, 1), (31, 1), (32, 1), (33, 1), (34, 1), (35, 1)):
        w[i] = [(1 - to_nose) / 2, (1 - to_nose) / 2, to_nose, 0, 0]
    half = TEMPLATE[54, 0]
    for i in range(48, 68):
        t = float(np.clip(x[i] / half, -1, 1))
        g = 0.5 + 0.5 * t * t  # smooth in t: a smiling photo's lips curve, they do not kink
        w[i] = [0, 0, 1 - g, g * (1 - t) / 2, g * (1 + t) / 2]
    for name in ("forehead", "forehead_out", "forehead_l", "forehead_out_l"):
        i = SKIN_INDEX[name]
        w[i] = 0
        w[i, side(i)] = 1
    w[SKIN_INDEX["glabella"]] = w[SKIN_INDEX["forehead_mid"]] = [0.5, 0.5, 0, 0, 0]
    return w


RESIDUAL_WEIGHTS = _residual_weights()


def fit_mesh(frame: FaceFrame, shape: tuple[int, int]) -> FaceMesh:
    """Place the template on a photo from its 5 landmarks.

    A weighted least-squares similarity (Umeyama 1991) maps the template's landmark counterparts onto
    the landmarks; what is left (faces differ from the mean: a longer nose, a smile) is spread over the
    mesh by RESIDUAL_WEIGHTS, so those points land on the landmarks exactly.
    """
    src = _landmark_positions(TEMPLATE)
    dst = np.asarray(frame.landmarks, np.float64)
    wt = FIT_WEIGHTS / FIT_WEIGHTS.sum()
    mu_s, mu_d = wt @ src, wt @ dst
    # complex-number form of the 2-D similarity: z -> k z + t, k = s e^{i theta}
    za, zb = (src - mu_s) @ [1, 1j], (dst - mu_d) @ [1, 1j]
    k = (wt * np.conj(za)) @ zb / ((wt * np.conj(za)) @ za)

    def similar(p: np.ndarray) -> np.ndarray:
        z = (p - mu_s) @ [1, 1j] * k
        return np.stack([z.real, z.imag], 1) + mu_d

    moving = similar(TEMPLATE)
    moving += RESIDUAL_WEIGHTS @ (dst - _landmark_positions(moving))
    moving = np.vstack([moving, LIP_MID @ moving[:68]])

    h, w = shape
    lo, hi = -FRAME_MARGIN * np.array([w, h]), (1 + FRAME_MARGIN) * np.array([w, h])
    anchors = similar(np.array(_ANCHORS))
    anchors = anchors[((anchors > lo) & (anchors < hi)).all(1)]
    border = np.array([(x, y) for x in np.linspace(lo[0], hi[0], 5) for y in np.linspace(lo[1], hi[1], 5)
                       if x in (lo[0], hi[0]) or y in (lo[1], hi[1])])
    gap = MIN_ANCHOR_GAP * frame.d
    keep = [p for p in (*anchors, *border) if np.min(np.hypot(*(moving - p).T)) > gap]
    points = np.vstack([moving, np.array(keep).reshape(-1, 2)])
    return FaceMesh(points, frame, (h, w), *triangulate(points, frame))


OPEN_AT_REST = 0.03
"""Inter-ocular units the lower lip is lowered by to orient the mouth's strip (see `triangulate`)."""
MIN_HEIGHT = 0.5
"""Pixels: a triangle lower than this is a line (see `FaceMesh.thin`)."""


def _crosses(p: np.ndarray, q: np.ndarray, r: np.ndarray, s: np.ndarray) -> bool:
    """Whether segments pq and rs cross at a point inside both."""
    side = lambda a, b, c: (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])  # noqa: E731
    return side(p, q, r) * side(p, q, s) < 0 and side(r, s, p) * side(r, s, q) < 0


def _force_edge(simplices: np.ndarray, points: np.ndarray, a: int, b: int) -> None:
    """Flip edges of the triangulation (in place) until a-b is one of its edges (Lawson flips: each
    replaces an edge that a-b crosses by the other diagonal of its convex quadrilateral)."""
    for _ in range(len(simplices)):
        has = lambda *v: np.isin(simplices, v).sum(1) == len(v)  # noqa: E731
        if has(a, b).any():
            return
        for t in np.flatnonzero(has(a)):
            c, d = (int(i) for i in simplices[t] if i != a)
            if not _crosses(points[a], points[b], points[c], points[d]):
                continue
            u = next(k for k in np.flatnonzero(has(c, d)) if k != t)
            e = next(int(i) for i in simplices[u] if i not in (c, d))
            if _crosses(points[a], points[e], points[c], points[d]):  # convex: the flip is valid
                simplices[t], simplices[u] = (a, c, e), (a, e, d)
                break
        else:
            raise ValueError(f"cannot make {a}-{b} an edge of the face mesh")
    raise ValueError(f"cannot make {a}-{b} an edge of the face mesh")


def triangulate(points: np.ndarray, frame: FaceFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(simplices, orientation, thin) of a neutral mesh, fixed for every expression of the photo.

    The closed lips' upper and lower contact points coincide. Delaunay triangulates the mesh without
    the lower ones; then the mesh is cut along the contact line (a triangle below it takes the lower
    twins of its contact points) and the cut is bridged by a strip of triangles, flat at rest, that
    the warp stretches into the mouth cavity when the lips part. The lips' outline stays a line of
    triangle edges whatever the move (a Delaunay triangulation of each moved mesh would not keep it:
    it can join parted contact points to an outer-lip point and tear the lip by the mouth corner).
    """
    upper, lower = list(MOUTH_HOLE[:9]), [60, *MOUTH_HOLE[:8:-1], 64]  # both left corner to right
    twin = dict(zip(upper[1:-1], lower[1:-1]))
    keep = np.setdiff1d(np.arange(len(points)), lower[1:-1])
    simplices = keep[Delaunay(points[keep]).simplices]
    for a, b in zip(upper[:-1], upper[1:]):  # the cut runs along triangle edges
        _force_edge(simplices, points, a, b)
    # the lower lip's triangles: centroid below the contact line (face frame: y grows downwards)
    xy = np.stack([(points - frame.origin) @ frame.u, (points - frame.origin) @ frame.v], 1)
    line_x, line_y = xy[upper, 0], xy[upper, 1]
    centre = xy[simplices].mean(1)
    below = centre[:, 1] > np.interp(centre[:, 0], line_x, line_y)
    for t in np.flatnonzero(below & np.isin(simplices, list(twin)).any(1)):
        simplices[t] = [twin.get(int(i), int(i)) for i in simplices[t]]
    strip = [tri for k in range(8) for tri in ((upper[k], upper[k + 1], lower[k + 1]),
                                                (upper[k], lower[k + 1], lower[k]))
             if len(set(tri)) == 3]
    simplices = np.vstack([simplices, strip])
    # orientations with the lower lip lowered a little, where the strip has an area
    opened = points.copy()
    opened[lower[1:-1]] += OPEN_AT_REST * frame.d * frame.v
    tri = opened[simplices]
    area = _signed_area(tri)
    longest = np.max([np.hypot(*(tri[:, i] - tri[:, (i + 1) % 3]).T) for i in range(3)], axis=0)
    return simplices, np.sign(area), np.abs(area) / longest < MIN_HEIGHT


@functools.lru_cache(maxsize=64)
def _cached_mesh(landmarks: bytes, shape: tuple[int, int]) -> FaceMesh:
    return fit_mesh(FaceFrame.from_landmarks(np.frombuffer(landmarks).reshape(5, 2)), shape)


def face_mesh(frame: FaceFrame, shape: tuple[int, int]) -> FaceMesh:
    """`fit_mesh`, cached per photo (keyed by its landmarks and size, not by object identity)."""
    return _cached_mesh(np.ascontiguousarray(frame.landmarks, np.float64).tobytes(), tuple(shape))


# ------------------------------------------------------------------ the warp


@functools.lru_cache(maxsize=4)
def _pixel_grid(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([gx.ravel(), gy.ravel()], 1)


def _signed_area(tri: np.ndarray) -> np.ndarray:
    """(T,) twice the signed area of (T, 3, 2) triangles."""
    a, b = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


def folded(mesh: FaceMesh, moved: np.ndarray) -> np.ndarray:
    """(T,) bool: the mesh's triangles that `moved` turns over (a triangle squashed flat, as the
    mouth strip of closed lips, is not turned over)."""
    now = _signed_area(moved[mesh.simplices])
    return (now * mesh.orientation < -1e-6 * mesh.d ** 2) & ~mesh.thin


def _neighbours(simplices: np.ndarray) -> np.ndarray:
    """(T, 3) the triangle across each edge of each triangle (itself on the hull)."""
    across: dict[tuple[int, int], list[int]] = {}
    for t, tri in enumerate(simplices):
        for k in range(3):
            across.setdefault(tuple(sorted((int(tri[k]), int(tri[(k + 1) % 3])))), []).append(t)
    out = np.repeat(np.arange(len(simplices))[:, None], 3, 1)
    for t, tri in enumerate(simplices):
        for k in range(3):
            out[t, k] = next((u for u in across[tuple(sorted((int(tri[k]), int(tri[(k + 1) % 3]))))] if u != t), t)
    return out


def piecewise_affine_field(neutral: np.ndarray, moved: np.ndarray, simplices: np.ndarray,
                           shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) backward displacement `f`: image(x + f(x)) shows the mesh moved neutral → moved.

    Every pixel's triangle in the moved mesh comes from one rasterisation of the triangles' indices,
    corrected on their edges (a pixel drawn by a neighbour goes to whichever of the two holds its
    centre); its source is the point with the same barycentric coordinates in the same triangle of
    the neutral mesh, i.e. one affine map per triangle (in an opened mouth, onto the lips' contact
    line). Triangles flat in the moved mesh (the strip of closed lips) hold no pixel.
    """
    h, w = shape
    tri_now, tri_rest = moved[simplices], neutral[simplices]  # (T, 3, 2)
    area = np.abs(_signed_area(tri_now))
    flat = area <= 1e-6
    index = np.full((h, w), -1, np.int32)
    for t in np.flatnonzero(~flat):
        cv2.fillConvexPoly(index, np.round(tri_now[t] * 16).astype(np.int32), int(t), cv2.LINE_8, 4)
    t = index.ravel()
    if (t < 0).any():
        raise ValueError(f"{int((t < 0).sum())} pixels are outside the mesh: its frame must cover the image")
    # barycentric coordinates: [x y 1] @ inv([corners | 1]); a flat triangle gets none
    corners = np.concatenate([tri_now, np.ones((len(simplices), 3, 1))], 2)
    inv = np.zeros((len(simplices), 3, 3))
    inv[~flat] = np.linalg.inv(corners[~flat])
    grid = _pixel_grid((h, w))
    xy1 = np.concatenate([grid, np.ones((len(grid), 1))], 1)
    bary = np.einsum("mi,mij->mj", xy1, inv[t])
    edge = np.flatnonzero(bary.min(1) < -1e-6)  # drawn by a neighbour: try the neighbours
    cand = np.concatenate([t[edge, None], _neighbours(simplices)[t[edge]]], 1)  # (E, 4)
    cand = np.where(flat[cand], t[edge, None], cand)
    fit = np.einsum("ei,ekij->ekj", xy1[edge], inv[cand]).min(2)  # (E, 4): inside when >= 0
    t[edge] = cand[np.arange(len(edge)), fit.argmax(1)]
    bary[edge] = np.einsum("ei,eij->ej", xy1[edge], inv[t[edge]])
    source = np.einsum("mk,mkd->md", bary, tri_rest[t])
    return (source - grid).reshape(h, w, 2).astype(np.float32)


# ------------------------------------------------------------------ action units

@dataclass(frozen=True)
class ActionUnit:
    """One FACS action unit: what it moves at intensity E (the maximum)."""

    name: str
    moves: dict[int | str, tuple[float, float]]
    """iBUG index (image-right side or midline; mirrored onto the other side) or skin-point name →
    (outward = away from the midline, downward), inter-ocular units."""


# Amplitudes from the FACS Manual's appearance changes and anatomy, not tuned to any classifier:
# 1 IOD (pupil distance) is ~63 mm, so a brow raise of ~9 mm is ~0.15. Index legend: brow 22 (inner)
# .. 26 (outer); upper lid 43-44, lower lid 46-47, eye corners 42 (inner), 45 (outer); nose 27 (root)
# .. 30 (tip), 33-35 (base, 35 the wing); lips 51-53 upper, 54 corner, 55-57 lower (57 middle),
# inner lips 62-63 upper, 64 corner, 65-66 lower; jaw 8 (chin) .. 16 (ear).
ACTION_UNITS: dict[int, ActionUnit] = {
    # frontalis, pars medialis: the inner brow rises ~9-10 mm and the brow turns oblique; the
    # medial forehead skin bunches up above it (half the brow's travel), the lateral end barely moves
    1: ActionUnit("inner brow raiser", {
        22: (-0.01, -0.16), 23: (0.0, -0.12), 24: (0.0, -0.06), 25: (0.0, -0.02),
        "glabella": (0.0, -0.10), "forehead_mid": (0.0, -0.07), "forehead": (0.0, -0.05),
        "forehead_out": (0.0, -0.01)}),
    # frontalis, pars lateralis: the outer brow rises ~8 mm and arches; the lateral eye-cover fold
    # is stretched up with it (outer upper lid a little)
    2: ActionUnit("outer brow raiser", {
        22: (0.0, -0.02), 23: (0.0, -0.06), 24: (0.0, -0.11), 25: (0.01, -0.13), 26: (0.01, -0.11),
        44: (0.0, -0.01), "forehead": (0.0, -0.03), "forehead_out": (0.0, -0.06)}),
    # corrugator supercilii, depressor supercilii, procerus: the brows are lowered (inner end ~8 mm)
    # and drawn together (~4 mm each), the skin between them pulled down; the brow pushes the
    # upper lid's cover fold down a little
    4: ActionUnit("brow lowerer", {
        22: (-0.07, 0.13), 23: (-0.04, 0.10), 24: (-0.02, 0.07), 25: (0.0, 0.04), 26: (0.0, 0.015),
        "glabella": (0.0, 0.12), 27: (0.0, 0.03), 43: (0.0, 0.03), 44: (0.0, 0.02),
        "forehead_mid": (0.0, 0.03), "forehead": (-0.01, 0.02)}),
    # levator palpebrae superioris: the upper lid rises ~3-4 mm, baring sclera above the iris
    5: ActionUnit("upper lid raiser", {43: (0.0, -0.055), 44: (0.0, -0.05), 42: (0.0, -0.005),
                                       45: (0.0, -0.005)}),
    # orbicularis oculi, pars orbitalis: the cheek is lifted (~5 mm), the lower lid pushed up from
    # below, the skin at the outer eye corner drawn in (crow's feet), the lateral brow slightly down
    6: ActionUnit("cheek raiser", {
        "cheek": (-0.01, -0.08), 46: (0.0, -0.04), 47: (0.0, -0.035), 45: (-0.01, -0.015),
        25: (0.0, 0.02), 26: (0.0, 0.03), 14: (0.0, -0.02), 13: (0.0, -0.015)}),
    # orbicularis oculi, pars palpebralis: the lids tighten, the lower lid rises and straightens
    # (~2-3 mm), the upper lid lowers slightly
    7: ActionUnit("lid tightener", {46: (0.0, -0.04), 47: (0.0, -0.045), 43: (0.0, 0.02),
                                    44: (0.0, 0.02), 45: (-0.005, -0.01)}),
    # levator labii superioris alaeque nasi: the skin along the nose is drawn up (nostril wings
    # ~4 mm), the infraorbital triangle and upper lip rise, the inner brows are pulled down
    9: ActionUnit("nose wrinkler", {
        35: (0.01, -0.06), 34: (0.0, -0.05), 33: (0.0, -0.04), 30: (0.0, -0.02), 29: (0.0, -0.015),
        28: (0.0, -0.01), 51: (0.0, -0.04), 52: (0.0, -0.04), 53: (0.0, -0.03), 62: (0.0, -0.03),
        63: (0.0, -0.03), "cheek": (0.0, -0.04), 47: (0.0, -0.02), 46: (0.0, -0.015),
        22: (-0.01, 0.04), 23: (0.0, 0.02), "glabella": (0.0, 0.03)}),
    # levator labii superioris: the upper lip rises ~6 mm, most above the canines (an angular upper
    # lip), the nostril wings widen and rise, the nasolabial furrow deepens
    10: ActionUnit("upper lip raiser", {
        51: (0.0, -0.08), 52: (0.0, -0.09), 53: (0.01, -0.07), 62: (0.0, -0.08), 63: (0.0, -0.085),
        54: (0.01, -0.02), 64: (0.0, -0.03), 35: (0.02, -0.03), 34: (0.0, -0.02), 33: (0.0, -0.01),
        "cheek": (0.0, -0.03)}),
    # zygomaticus major: the lip corners are pulled back and up along the muscle's line (~8 mm out,
    # ~7 mm up), the lips stretch into an upward curve (the rise grows with the square of the
    # distance from the middle), the cheeks bunch up and push the lower lids
    12: ActionUnit("lip corner puller", {
        54: (0.13, -0.11), 64: (0.12, -0.10), 53: (0.07, -0.05), 52: (0.03, -0.015), 63: (0.04, -0.02),
        55: (0.07, -0.05), 56: (0.03, -0.015), 65: (0.04, -0.02), "cheek": (0.03, -0.05),
        35: (0.015, -0.01), 46: (0.0, -0.015), 47: (0.0, -0.01), 12: (0.01, -0.01), 11: (0.01, -0.01)}),
    # depressor anguli oris: the lip corners are pulled down (~5 mm) and slightly out
    15: ActionUnit("lip corner depressor", {
        54: (0.02, 0.08), 64: (0.015, 0.07), 53: (0.01, 0.03), 55: (0.01, 0.03), 63: (0.0, 0.02),
        65: (0.0, 0.02)}),
    # depressor labii inferioris: the lower lip is pulled down (~4-5 mm) and a little sideways,
    # the lips part slightly
    16: ActionUnit("lower lip depressor", {
        57: (0.0, 0.07), 56: (0.02, 0.07), 55: (0.02, 0.06), 66: (0.0, 0.08), 65: (0.02, 0.065),
        54: (0.01, 0.01)}),
    # mentalis: the chin boss and the lower lip are pushed up (~3-4 mm), the mouth turns into an
    # inverted U
    17: ActionUnit("chin raiser", {
        57: (0.0, -0.05), 56: (0.0, -0.045), 55: (0.0, -0.03), 66: (0.0, -0.04), 65: (0.0, -0.035),
        8: (0.0, -0.04), 9: (0.0, -0.03), 54: (0.0, 0.01)}),
    # risorius (with platysma): the corners are pulled sideways (~6 mm), the lips elongate and flatten
    20: ActionUnit("lip stretcher", {
        54: (0.10, 0.02), 64: (0.09, 0.02), 53: (0.05, 0.0), 55: (0.05, 0.02), 52: (0.02, 0.0),
        56: (0.02, 0.01), 63: (0.04, 0.0), 65: (0.04, 0.01), 51: (0.0, 0.01), 57: (0.0, -0.01),
        11: (0.01, 0.01), 12: (0.01, 0.01)}),
    # orbicularis oris: the lips tighten, their red parts narrow (~2 mm each) and the mouth narrows
    23: ActionUnit("lip tightener", {
        54: (-0.03, 0.0), 64: (-0.03, 0.0), 51: (0.0, 0.025), 52: (0.0, 0.025), 53: (-0.01, 0.02),
        57: (0.0, -0.025), 56: (0.0, -0.025), 55: (-0.01, -0.02), 63: (-0.01, 0.0), 65: (-0.01, 0.0)}),
    # orbicularis oris: the lips press together, red parts narrowed further and the inner lips meet
    24: ActionUnit("lip pressor", {
        51: (0.0, 0.035), 52: (0.0, 0.035), 53: (0.0, 0.025), 57: (0.0, -0.035), 56: (0.0, -0.035),
        55: (0.0, -0.025), 62: (0.0, 0.02), 63: (0.0, 0.02), 66: (0.0, -0.02), 65: (0.0, -0.02),
        54: (-0.015, 0.0), 64: (-0.015, 0.0)}),
    # lips part (orbicularis oris relaxed, depressors): the lips separate ~5 mm without a jaw drop,
    # mostly the lower lip (which, like every lower-lip move here, keeps the lip's thickness: its
    # outer edge moves as far as its inner one)
    25: ActionUnit("lips part", {
        62: (0.0, -0.02), 63: (0.0, -0.02), 66: (0.0, 0.07), 65: (0.0, 0.055), 57: (0.0, 0.06),
        56: (0.0, 0.06), 55: (0.0, 0.045)}),
    # the mandible is lowered (~14 mm at the chin), rotating about the jaw joint: the chin and lower
    # lip drop most, the jaw angle least; the corners follow a little inwards; the skin under the
    # chin follows half way
    26: ActionUnit("jaw drop", {
        8: (0.0, 0.22), 9: (0.0, 0.21), 10: (0.0, 0.17), 11: (0.0, 0.12), 12: (0.0, 0.07), 13: (0.0, 0.03),
        57: (0.0, 0.20), 56: (0.0, 0.19), 55: (-0.01, 0.17), 66: (0.0, 0.20), 65: (0.0, 0.175),
        54: (-0.02, 0.06), 64: (-0.02, 0.07), 51: (0.0, -0.01), 62: (0.0, -0.01),
        "submental": (0.0, 0.11), "submental_side": (0.0, 0.07)}),
    # lateral pterygoid and digastric: the jaw is pulled far down (~25 mm at the chin) and the mouth
    # stretched open into an oval: corners drawn in, upper lip pulled up a little
    27: ActionUnit("mouth stretch", {
        8: (0.0, 0.40), 9: (0.0, 0.38), 10: (-0.01, 0.31), 11: (-0.01, 0.22), 12: (-0.01, 0.13),
        13: (0.0, 0.05), 57: (0.0, 0.37), 56: (-0.02, 0.36), 55: (-0.04, 0.33), 66: (0.0, 0.37),
        65: (-0.03, 0.34), 54: (-0.07, 0.11), 64: (-0.07, 0.11), 51: (0.0, -0.02), 52: (0.0, -0.02),
        53: (-0.02, 0.02), 62: (0.0, -0.03), 63: (-0.01, -0.02), "cheek": (0.0, 0.03),
        "submental": (0.0, 0.20), "submental_side": (0.0, 0.12)}),
}

# EMFACS prototypes and major variants (Friesen & Ekman 1983; Matsumoto & Ekman 2004); one is
# drawn per video.
AU_PROTOTYPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "happiness": ((6, 12), (6, 12, 25)),
    "sadness": ((1, 4, 15), (1, 4, 15, 17)),
    "surprise": ((1, 2, 5, 26), (1, 2, 5, 27)),
    "fear": ((1, 2, 4, 5, 20, 26), (1, 2, 4, 5, 7, 20, 25)),
    "anger": ((4, 5, 7, 23), (4, 5, 7, 24), (4, 5, 7, 10, 25, 26)),
    "disgust": ((9, 15, 16), (9, 10, 17), (10, 17)),
}
INTENSITY = (0.6, 1.2)
"""Each AU's intensity per video, relative to E (people differ in how strongly each muscle acts)."""
ASYMMETRY = 0.15
"""Left and right intensities of an AU differ by up to this share (spontaneous expressions are
rarely symmetric)."""


@dataclass(frozen=True)
class Activation:
    """The action units of one video and their intensities on each side."""

    aus: tuple[int, ...]
    left: np.ndarray
    """(len(aus),) intensity on the image-left half (1 = E)."""
    right: np.ndarray


def sample_activation(label: str, rng: np.random.Generator, amplitude: float = 1.0) -> Activation:
    """Draw a prototype variant, per-AU intensities and asymmetries for one video of `label`."""
    if label not in AU_PROTOTYPES:
        raise ValueError(f"unknown expression {label!r}; choose from {sorted(AU_PROTOTYPES)}")
    variants = AU_PROTOTYPES[label]
    aus = variants[int(rng.integers(len(variants)))]
    level = amplitude * rng.uniform(*INTENSITY, size=len(aus))
    skew = rng.uniform(-ASYMMETRY, ASYMMETRY, size=len(aus)) / 2
    return Activation(aus, level * (1 + skew), level * (1 - skew))


def _point_index(key: int | str, mirrored: bool) -> int:
    if isinstance(key, str):
        return SKIN_INDEX[f"{key}_l" if mirrored and f"{key}_l" in SKIN_INDEX else key]
    return int(MIRROR[key]) if mirrored else key


def mesh_displacement(mesh: FaceMesh, act: Activation) -> np.ndarray:
    """(N, 2) pixel displacement of every mesh point (anchors: 0) for an activation."""
    frame_disp = np.zeros((len(mesh.points), 2))  # face-frame units
    for au, left, right in zip(act.aus, act.left, act.right):
        for key, (out, down) in ACTION_UNITS[au].moves.items():
            i = _point_index(key, False)
            j = _point_index(key, True)
            if i == j:  # midline: no sideways move, the mean of both sides' intensity
                frame_disp[i] += (0.0, 0.5 * (left + right) * down)
            else:
                frame_disp[i] += (right * out, right * down)
                frame_disp[j] += (-left * out, left * down)
    frame_disp[N_BASE:N_MOVING] = LIP_MID @ frame_disp[:68]
    # the lips meet but never pass: a lower inner-lip point pushed above its upper partner (AU17
    # with AU24, say) takes the upper one along, both at their mean height
    for a, b in _ALL_LIP_PAIRS:
        rise = frame_disp[a, 1] - frame_disp[b, 1]  # how far the lower passed the upper (both at rest on one point)
        if rise > 0:
            frame_disp[a, 1] -= rise / 2
            frame_disp[b, 1] += rise / 2
    f = mesh.frame
    return f.d * (frame_disp[:, :1] * f.u + frame_disp[:, 1:] * f.v)


# ------------------------------------------------------------------ appearance: wrinkles and the mouth


@dataclass(frozen=True)
class Band:
    """A soft wrinkle: a shaded crease along a polyline that follows the moved mesh, with a lit bulge
    of skin beside it (skin bunched by a muscle folds: a shadow in the fold, light on the ridge)."""

    vertices: tuple[tuple[int | str, float, float], ...]
    """(mesh point, x offset, y offset), inter-ocular units; a paired band is written for the
    image-right half (x offset outward) and mirrored."""
    depth: float
    """Darkening at the crease's middle at intensity E."""
    width: float = 0.016
    """Gaussian sigma of the crease, inter-ocular units."""
    lit: tuple[float, float] = (0.0, -1.0)
    """Direction (x outward, y down) from the crease to the lit bulge."""
    paired: bool = True


def _forehead(o: float, depth: float, lateral: bool) -> Band:
    if lateral:  # above the outer brow, bending down at the temple
        return Band(((23, 0.0, -o), (24, 0.0, -o), (25, 0.0, -o), (26, 0.03, -o + 0.05)), depth)
    return Band(((20, 0.0, -o), (21, 0.0, -o - 0.01), (22, 0.0, -o - 0.01), (23, 0.0, -o)), depth,
                paired=False)


_NASOLABIAL = ((35, 0.06, -0.05), (35, 0.12, 0.08), (54, 0.07, -0.04), (54, 0.09, 0.08))
WRINKLES: dict[int, tuple[Band, ...]] = {
    # horizontal forehead lines, in the middle for AU1 and at the sides for AU2 (FACS: AU1 wrinkles
    # only the centre of the forehead, AU2 its lateral parts)
    1: (_forehead(0.14, 0.16, False), _forehead(0.25, 0.12, False)),
    2: (_forehead(0.15, 0.14, True), _forehead(0.26, 0.10, True)),
    # vertical glabella furrows between the lowered brows
    4: (Band(((22, -0.045, 0.04), (22, -0.04, -0.06), (22, -0.02, -0.15)), 0.15, 0.024, lit=(0.0, 0.0)),),
    # crow's feet fanning from the outer eye corner, and the lower-lid bulge (infraorbital furrow
    # under the raised lower lid, lit above)
    6: tuple(Band(((45, 0.07, -0.03 + 0.04 * k), (45, 0.19, -0.08 + 0.09 * k)), 0.14, 0.015,
                  lit=(0.0, -1.0)) for k in range(3))
       + (Band(((42, 0.02, 0.10), (47, 0.0, 0.11), (46, 0.0, 0.11), (45, 0.0, 0.08)), 0.22),),
    # wrinkles across the nose root and on its sides
    9: tuple(Band(((28, 0.03, -0.10 + 0.07 * k), (28, 0.12, -0.06 + 0.08 * k)), 0.15, 0.018)
             for k in range(2))
       + (Band(((28, -0.07, -0.12), (28, 0.07, -0.12)), 0.12, 0.018, paired=False),),
    # the nasolabial furrow deepens (lit on the cheek side)
    10: (Band(_NASOLABIAL[:3], 0.14, 0.028, lit=(1.0, 0.0)),),
    12: (Band(_NASOLABIAL, 0.18, 0.028, lit=(1.0, 0.0)),),
    # depressor anguli oris: a fold running down from the lowered corner
    15: (Band(((54, 0.02, 0.05), (54, 0.06, 0.20)), 0.15, 0.018, lit=(1.0, 0.0)),),
    # mentalis: the mentolabial sulcus deepens above the raised chin boss
    17: (Band(((58, 0.0, 0.09), (57, 0.0, 0.10), (56, 0.0, 0.09)), 0.18, 0.02, lit=(0.0, 1.0),
              paired=False),),
}
BULGE_LIGHT = 0.25
"""Brightening of a wrinkle's lit ridge relative to its crease's darkening."""
CAVITY_LUMA = (0.12, 0.3)
"""Brightness of the mouth cavity relative to the face's skin, under the upper lip and above the
lower one: the upper lip shades the cavity, the tongue and lower teeth catch light. A target
brightness, not a fixed darkening: the cavity is stretched from the lips' contact line, dark on one
photo, teeth on another. The gradient also keeps the onset honest: the renderer scales this apex
shading with the intensity, and the apex cavity's lower part is lower lip and chin earlier on."""
TEETH_LUMA = 0.8
"""Brightness of the bared upper teeth relative to the face's skin (teeth already brighter, on a photo
that shows them, are left as they are)."""
TEETH_GAIN = 0.5
"""At most this much brighter than what the warp puts there: the shade cannot change its colour, and
on a closed-mouth photo that is the lips' contact line, whose red turns neon pink when lit further."""
TEETH_AUS = frozenset({10, 12, 25})
"""AUs that bare the upper teeth when the lips are apart (FACS: AU10 and AU12 raise and stretch the
upper lip off the teeth, AU25 parts the lips)."""


def _draw_band(shade: np.ndarray, pts: np.ndarray, sigma: float, depth: float, lit: np.ndarray) -> None:
    """Add one band to `shade` in place (pts: (k, 2) image coordinates)."""
    h, w = shade.shape
    r = 4 * sigma
    x0, y0 = np.maximum(np.floor(pts.min(0) - r).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0) + r).astype(int) + 1, (w, h))
    if x1 <= x0 or y1 <= y0:
        return
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    p = np.stack([gx.ravel(), gy.ravel()], 1)  # (M, 2)
    a, ab = pts[:-1], np.diff(pts, axis=0)  # (S, 2)
    length = np.hypot(*ab.T) + 1e-9
    rel = p[:, None, :] - a[None]  # (M, S, 2)
    t = np.clip((rel * ab).sum(-1) / length ** 2, 0, 1)
    dist = np.hypot(*(rel - t[..., None] * ab).transpose(2, 0, 1))  # (M, S)
    seg = dist.argmin(1)
    m = np.arange(len(p))
    normal = np.stack([-ab[:, 1], ab[:, 0]], 1) / length[:, None]
    side = np.sign(normal @ lit)  # the normal that points to the lit side
    signed = (rel[m, seg] * normal[seg]).sum(-1) * side[seg]
    arc = (np.concatenate([[0], np.cumsum(length)])[seg] + t[m, seg] * length[seg]) / length.sum()
    taper = np.sin(np.pi * arc) ** 0.5
    crease = np.exp(-0.5 * (dist[m, seg] / sigma) ** 2)
    bulge = np.exp(-0.5 * ((signed - 2.5 * sigma) / (1.5 * sigma)) ** 2) if lit.any() else 0.0
    shade[y0:y1, x0:x1] += (depth * taper * (crease - BULGE_LIGHT * bulge)).reshape(y1 - y0, x1 - x0).astype(np.float32)


def _wrinkles(mesh: FaceMesh, moved: np.ndarray, act: Activation) -> np.ndarray:
    f = mesh.frame
    shade = np.zeros(mesh.shape, np.float32)
    for au, left, right in zip(act.aus, act.left, act.right):
        for band in WRINKLES.get(au, ()):
            for side, level in (((1, right), (-1, left)) if band.paired else ((1, 0.5 * (left + right)),)):
                pts = np.array([moved[_point_index(k, side < 0)] + f.d * (side * x * f.u + y * f.v)
                                for k, x, y in band.vertices])
                lit = side * band.lit[0] * f.u + band.lit[1] * f.v
                _draw_band(shade, pts, max(0.7, band.width * f.d), band.depth * level, lit)
    return shade


def _skin_luma(mesh: FaceMesh, gray: np.ndarray) -> float:
    """Median brightness of the cheeks (discs of 0.12 IOD around the cheek points)."""
    h, w = gray.shape
    gy, gx = np.mgrid[0:h, 0:w]
    near = np.zeros((h, w), bool)
    for name in ("cheek", "cheek_l"):
        x, y = mesh.points[SKIN_INDEX[name]]
        near |= (gx - x) ** 2 + (gy - y) ** 2 < (0.12 * mesh.d) ** 2
    return float(np.median(gray[near])) if near.any() else float(np.median(gray))


def _distance_to(polyline: np.ndarray, shape: tuple[int, int], scale: int) -> np.ndarray:
    """(H, W) distance in pixels to a polyline given in cv2's fixed point (`scale` = 16)."""
    line = np.full(shape, 255, np.uint8)
    cv2.polylines(line, [np.round(polyline).astype(np.int32)], False, 0, 1, cv2.LINE_8, 4)
    return cv2.distanceTransform(line, cv2.DIST_L2, 3)


def _lip_gap(points: np.ndarray, v: np.ndarray) -> float:
    return float(np.mean([(points[b] - points[a]) @ v for a, b in _LIP_PAIRS]))


def _mouth(mesh: FaceMesh, moved: np.ndarray, act: Activation, image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Shading of the mouth opening, nothing when the lips did not part.

    The cavity is the moved inner-lip polygon, which the warp fills with the lips' contact line
    stretched; it is shaded to a dark target brightness, with the upper teeth lighter below the upper
    lip when the AUs bare them.
    """
    f, shape = mesh.frame, mesh.shape
    opening = (_lip_gap(moved, f.v) - _lip_gap(mesh.points, f.v)) / f.d
    shade = np.zeros(shape, np.float32)
    if opening <= 0.01:
        return shade
    strength = float(np.clip((opening - 0.01) / 0.05, 0, 1))
    strength = strength * strength * (3 - 2 * strength)  # smoothstep: a slight parting is a shadow
    hole = moved[list(MOUTH_HOLE)]
    scale = 16  # cv2 drawing with 4 fractional bits
    mask = np.zeros(shape, np.float32)
    cv2.fillPoly(mask, [np.round(hole * scale).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
    edge = max(0.6, 0.012 * f.d)
    mask = cv2.GaussianBlur(mask, (0, 0), edge)
    # 0 along the upper inner lip, 1 along the lower one
    half = len(MOUTH_HOLE) // 2
    to_upper, to_lower = (_distance_to(hole[idx] * scale, shape, scale) for idx in
                          (slice(0, half + 1), np.r_[half:len(hole), 0]))
    down = to_upper / np.maximum(to_upper + to_lower, 1e-6)
    # what the warp puts in the hole (the contact line's pixels, drawn out into streaks) is brought
    # to the target brightness pixel by pixel, which also flattens the streaks
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    grid = _pixel_grid(tuple(shape)).reshape(*shape, 2).astype(np.float32)
    seen = cv2.GaussianBlur(cv2.remap(gray, grid[..., 0] + field[..., 0], grid[..., 1] + field[..., 1],
                                      cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101), (0, 0), 0.8)
    seen = np.maximum(seen, 1.0)
    skin = _skin_luma(mesh, gray)
    cavity = skin * (CAVITY_LUMA[0] + (CAVITY_LUMA[1] - CAVITY_LUMA[0]) * down ** 1.5)
    shade = strength * mask * np.clip(1 - cavity / seen, 0, 0.95)
    if TEETH_AUS & set(act.aus):
        height = _lip_gap(moved, f.v)
        drop = min(0.45 * height, 0.07 * f.d) * f.v
        upper = hole[:9]  # 60 .. 64 along the upper lip
        teeth = np.zeros(shape, np.float32)
        cv2.fillPoly(teeth, [np.round(np.vstack([upper, upper[::-1] + drop]) * scale).astype(np.int32)], 1.0,
                     cv2.LINE_AA, 4)
        centre, half_w = (upper[0] + upper[-1]) / 2, 0.5 * np.hypot(*(upper[-1] - upper[0]))
        gy, gx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        along = np.abs((gx - centre[0]) * f.u[0] + (gy - centre[1]) * f.u[1]) / max(half_w, 1.0)
        teeth = cv2.GaussianBlur(teeth, (0, 0), edge) * mask * np.clip((1.0 - along) / 0.3, 0, 1)
        shade = shade * (1 - teeth) + strength * teeth * np.clip(1 - TEETH_LUMA * skin / seen, -TEETH_GAIN, 0.0)
    return shade


# ------------------------------------------------------------------ the rig's entry points


UNFOLD_STEPS = 30


def unfold(mesh: FaceMesh, disp: np.ndarray) -> np.ndarray:
    """`disp` of the mesh's points, changed where it would turn a triangle over.

    Skin cannot pass through skin: where the summed AU moves would fold the mesh (features that sit
    closer in a photo than in the mean face, e.g. a smiling upper lip near the nose), the corners of
    each turned-over triangle are pulled halfway towards their common move, which translates the
    triangle rigidly in the limit; repeated until nothing folds.
    """
    disp = disp.copy()
    for _ in range(UNFOLD_STEPS):
        flipped = mesh.simplices[folded(mesh, mesh.points + disp)]
        if not len(flipped):
            return disp
        for tri in flipped:
            disp[tri] = 0.5 * disp[tri] + 0.5 * disp[tri].mean(0)
    raise ValueError(f"{len(flipped)} mesh triangles still turn over: the action units move too far")


def au_layers(mesh: FaceMesh, act: Activation, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(backward field, shade) at the apex of an activation on a photo (BGR) and its mesh."""
    moved = mesh.points + unfold(mesh, mesh_displacement(mesh, act))
    field = piecewise_affine_field(mesh.points, moved, mesh.simplices, mesh.shape)
    shade = _wrinkles(mesh, moved, act) + _mouth(mesh, moved, act, image, field)
    return field, np.clip(shade, -1.0, 0.95).astype(np.float32)


def au_expression_layers(face: FaceModel, label: str, rng: np.random.Generator,
                         amplitude: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(backward field at apex, shade at apex) of one video of class `label` on `face`: same meaning
    as `generate.expression_layers`; deterministic given `rng` (which it advances)."""
    mesh = face_mesh(face.frame, face.image.shape[:2])
    return au_layers(mesh, sample_activation(label, rng, amplitude), face.image)


# ------------------------------------------------------------------ looking at it

SHEET_SEED = 0
DEFAULT_SHEET = Path(__file__).resolve().parents[2] / "docs" / "demo_expressions_au.png"


def mesh_image(face: FaceModel, size: int = 480) -> np.ndarray:
    """`face`'s photo (BGR) with its fitted mesh: triangles, the 68 points (green), the skin points
    and lip midpoints (yellow), the fixed anchors (red) and RetinaFace's 5 landmarks (magenta)."""
    mesh = face_mesh(face.frame, face.image.shape[:2])
    k = size / max(mesh.shape)
    out = cv2.resize(face.image, (round(mesh.shape[1] * k), round(mesh.shape[0] * k)), interpolation=cv2.INTER_CUBIC)
    pts = mesh.points * k
    for s in mesh.simplices:
        cv2.polylines(out, [np.round(pts[s] * 16).astype(np.int32)], True, (200, 160, 60), 1, cv2.LINE_AA, 4)
    for i, p in enumerate(pts):
        colour = (0, 230, 0) if i < 68 else (0, 230, 230) if i < N_MOVING else (0, 0, 230)
        cv2.circle(out, tuple(int(c) for c in np.round(p)), 3, colour, -1, cv2.LINE_AA)
    for p in face.frame.landmarks * k:
        cv2.drawMarker(out, tuple(int(c) for c in np.round(p)), (255, 0, 255), cv2.MARKER_CROSS, 14, 2)
    return out


def main() -> None:
    from pipeline.demo.contact_sheet import contact_sheet, save_png
    from pipeline.demo.generate import CLASSES, load_models

    parser = argparse.ArgumentParser(description="Contact sheet of the action-unit rig (one row per identity).")
    parser.add_argument("out", type=Path, nargs="?", default=DEFAULT_SHEET)
    parser.add_argument("--size", type=int, default=176)
    parser.add_argument("--mesh", type=Path, default=None, help="also write the fitted meshes of 3 photos here")
    args = parser.parse_args()

    drawn: list[Activation] = []

    def layers(face, label: str) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([SHEET_SEED, zlib.crc32(face.identity.encode()), CLASSES.index(label)])
        act = sample_activation(label, rng)
        drawn.append(act)
        return au_layers(face_mesh(face.frame, face.image.shape[:2]), act, face.image)

    sheet = contact_sheet(args.size, layers=layers)
    n_cols = len(CLASSES)
    for k, act in enumerate(drawn):  # caption each cell with the AUs drawn for it
        y = 28 + (k // n_cols + 1) * args.size - 8
        x = (k % n_cols + 1) * args.size + 6
        text = "+".join(map(str, act.aus))
        cv2.putText(sheet, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(sheet, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    save_png(sheet, args.out)
    print(args.out)
    if args.mesh:
        faces = [photos[0] for photos in load_models()]
        save_png(np.hstack([mesh_image(f) for f in faces[:3]]), args.mesh)
        print(args.mesh)


if __name__ == "__main__":
    main()
