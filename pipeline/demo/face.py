"""Face geometry and the landmark-driven thin-plate-spline warp of the demo generator.

RetinaFace's 5 landmarks (detected once per photo) define a face frame; brow, eyelid, cheek, nose,
lip, jaw and fixed anchor points are placed in it, and each expression moves a subset of them
(generate.py's docstring lists the action units). The warp is a thin-plate spline through the
moved points, evaluated on a coarse grid and upsampled.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FIELD_STEP = 4
"""The warp field is evaluated every FIELD_STEP pixels and upsampled: a TPS is smooth at that scale."""

# ------------------------------------------------------------------ face geometry

# Control points in a face frame: origin = midpoint of the eyes, x along the eye line, y towards the
# mouth, unit = inter-ocular distance `d`. `side` -1 is the image-left half, +1 the image-right, 0 the
# midline; x is given for the right half and mirrored. Anchors are `ref`-relative: "eye" = that side's
# eye landmark, "mouth" = the midpoint of the mouth corners, "corner" = that side's mouth corner,
# "nose" = the nose tip, "face" = the origin.
_POINTS = (
    # name, ref, x, y, paired
    ("brow_inner", "face", 0.20, -0.40, True),
    ("brow_mid", "face", 0.50, -0.47, True),
    ("brow_outer", "face", 0.80, -0.40, True),
    ("glabella", "face", 0.00, -0.30, False),
    ("bridge", "face", 0.00, 0.00, False),
    ("lid_upper", "eye", 0.00, -0.11, True),
    ("lid_lower", "eye", 0.00, 0.09, True),
    ("eye_inner", "eye", -0.22, 0.00, True),
    ("eye_outer", "eye", 0.24, 0.00, True),
    ("cheek", "eye", 0.08, 0.50, True),
    ("nose_tip", "nose", 0.00, 0.00, False),
    ("nose_wing", "nose", 0.20, 0.02, True),
    ("mouth_corner", "corner", 0.00, 0.00, True),
    ("upper_lip", "mouth", 0.00, -0.10, False),
    ("upper_lip_side", "mouth", 0.20, -0.08, True),
    ("lower_lip", "mouth", 0.00, 0.13, False),
    ("lower_lip_side", "mouth", 0.20, 0.11, True),
    ("chin", "mouth", 0.00, 0.50, False),
    ("jaw", "mouth", 0.55, 0.32, True),
    # fixed anchors around the face keep the warp local
    ("forehead", "face", 0.00, -1.00, False),
    ("forehead_side", "face", 0.65, -0.95, True),
    ("temple", "face", 1.15, -0.30, True),
    ("face_side", "face", 1.10, 0.60, True),
    ("jaw_low", "mouth", 0.95, 0.60, True),
    ("neck", "mouth", 0.00, 1.10, False),
)

# Displacement at full intensity, per class: point name → (outward, downward) in units of `d`.
# "Outward" is away from the midline (so a negative value brings brows together).
EXPRESSIONS: dict[str, dict[str, tuple[float, float]]] = {
    # AU6 cheek raiser + AU12 lip-corner puller: corners up and out, cheeks up, eyes narrowed
    "happiness": {
        "mouth_corner": (0.13, -0.19), "upper_lip_side": (0.07, -0.08), "lower_lip_side": (0.07, -0.04),
        "upper_lip": (0.0, -0.03), "lower_lip": (0.0, 0.02), "cheek": (0.04, -0.11), "jaw": (0.02, -0.02),
        "nose_wing": (0.03, -0.02), "lid_lower": (0.0, -0.05), "lid_upper": (0.0, 0.025),
        "brow_outer": (0.0, 0.02),
    },
    # AU1 inner-brow raiser + AU4 + AU15 lip-corner depressor (+AU17 chin raiser)
    "sadness": {
        "brow_inner": (-0.02, -0.13), "brow_mid": (0.0, -0.03), "brow_outer": (0.0, 0.05),
        "lid_upper": (0.0, 0.035), "mouth_corner": (-0.03, 0.12), "upper_lip_side": (-0.01, 0.03),
        "lower_lip_side": (0.0, 0.03), "lower_lip": (0.0, -0.03), "chin": (0.0, -0.04),
        "cheek": (0.0, 0.02),
    },
    # AU1+2 brows up, AU5 upper lid raiser, AU26/27 jaw drop: the mouth opens vertically
    "surprise": {
        "brow_inner": (0.0, -0.17), "brow_mid": (0.0, -0.20), "brow_outer": (0.0, -0.15),
        "glabella": (0.0, -0.08), "forehead": (0.0, -0.04), "forehead_side": (0.0, -0.04),
        "lid_upper": (0.0, -0.07), "lid_lower": (0.0, 0.02),
        "mouth_corner": (-0.10, 0.10), "upper_lip": (0.0, -0.03), "upper_lip_side": (-0.05, -0.01),
        "lower_lip": (0.0, 0.32), "lower_lip_side": (-0.04, 0.27), "chin": (0.0, 0.32),
        "jaw": (0.0, 0.18), "cheek": (0.0, 0.04),
    },
    # AU4 brow lowerer (down and together) + AU5/7 glare + AU23/24 lips pressed and narrowed
    "anger": {
        "brow_inner": (-0.08, 0.17), "brow_mid": (-0.04, 0.11), "brow_outer": (0.0, 0.03),
        "glabella": (0.0, 0.05), "lid_upper": (0.0, 0.01), "lid_lower": (0.0, -0.05),
        "mouth_corner": (-0.09, 0.06), "upper_lip": (0.0, 0.05), "lower_lip": (0.0, -0.07),
        "upper_lip_side": (-0.05, 0.05), "lower_lip_side": (-0.05, -0.05), "chin": (0.0, -0.04),
        "nose_wing": (0.02, 0.0),
    },
    # EMFACS disgust 9+10+16+25 (+15): nose wrinkled and its wings raised, upper lip raised (upper teeth
    # show), lower lip pulled down, corners down; AU9 also pulls the medial brow down a little. No AU4:
    # brows lowered and drawn together belong to anger, and the two read alike without that difference.
    "disgust": {
        "upper_lip": (0.0, -0.12), "upper_lip_side": (0.01, -0.11), "nose_wing": (0.03, -0.07),
        "nose_tip": (0.0, -0.03), "mouth_corner": (0.0, 0.06), "lower_lip": (0.0, 0.10),
        "lower_lip_side": (0.0, 0.08), "cheek": (0.0, -0.06), "lid_lower": (0.0, -0.04),
        "brow_inner": (-0.02, 0.04), "glabella": (0.0, 0.03),
    },
    # AU1+2+4 brows up and together, AU5 eyes wide, AU20 lips stretched, AU25+26 jaw dropped (about
    # two thirds of surprise's AU27 mouth stretch). AU20's
    # risorius/platysma pull is lateral *and down*, and the jaw drop pulls the lower lip down with it:
    # the mouth is wide and flat with its corners level or low, never raised as in a smile.
    "fear": {
        "brow_inner": (-0.08, -0.14), "brow_mid": (-0.03, -0.11), "brow_outer": (0.0, -0.05),
        "lid_upper": (0.0, -0.09), "lid_lower": (0.0, -0.01),
        "mouth_corner": (0.12, 0.10), "upper_lip_side": (0.06, 0.0), "lower_lip_side": (0.06, 0.17),
        "upper_lip": (0.0, -0.01), "lower_lip": (0.0, 0.20), "chin": (0.0, 0.18), "jaw": (0.02, 0.10),
    },
}

# The inverse of a posed smile (AU6 cheek raiser + AU12 lip-corner puller + AU25 lips apart), applied
# once to a source photo whose resting face smiles (issue 31: 8 of the 12 shipped people's "neutral"
# frames read happy to a model trained on real faces): corners in and down, lips brought together,
# cheeks and lower lids lowered. Units of `d` at strength 1 (a broad, open smile); each photo's
# strength is set by looking at it (`assets.SOURCES`), never from the realism check's scores.
NEUTRALISE = {
    "mouth_corner": (-0.07, 0.10), "upper_lip_side": (-0.04, 0.06), "lower_lip_side": (-0.03, -0.05),
    "upper_lip": (0.0, 0.05), "lower_lip": (0.0, -0.07), "cheek": (-0.02, 0.07), "lid_lower": (0.0, 0.03),
    "nose_wing": (-0.02, 0.02),
}

# A blink at full intensity (units of `d`): the lids meet on a seam just below the eye landmark;
# above it the image is sampled BLINK_UPPER higher (upper-lid skin), below it BLINK_LOWER lower.
BLINK_UPPER, BLINK_LOWER, BLINK_SEAM = 0.14, 0.10, 0.01
BLINK_REACH = (0.34, 0.36)
"""Half-width and half-height of the region a blink moves (the eye opening plus its lids)."""

# Shading that the warp alone cannot produce, drawn on the warped face and darkened with intensity.
# Mouth opening: (width as a fraction of the moved mouth width, darkness); its height is how far
# the warp parted the lips, so a stretched closed mouth reads as an open one.
MOUTH_OPENING = {"surprise": (0.7, 0.72), "fear": (0.7, 0.6), "disgust": (0.6, 0.35)}
# Teeth bared inside the opening: the upper teeth by AU10 (disgust) and, with lips stretched, both rows in
# fear (the band is drawn under the upper lip). Lightness of the band: the pixel is multiplied by 1 + it.
TEETH = {"disgust": 0.6, "fear": 0.45}
# Creases: segments between two moved control points (name, outward offset, downward offset), drawn
# on both halves of the face, with a darkness: the glabella furrows of AU4, the nasolabial folds
# deepened by AU6/10/12, the nose-bridge wrinkles of AU9.
_NASOLABIAL = (("nose_wing", 0.06, -0.02), ("mouth_corner", 0.09, 0.05))
_FURROW = (("brow_inner", -0.05, -0.08), ("brow_inner", -0.07, 0.10))
CREASES: dict[str, list[tuple[tuple, tuple, float]]] = {
    "happiness": [(*_NASOLABIAL, 0.30)],
    "anger": [(*_FURROW, 0.55), (("brow_inner", 0.0, 0.06), ("brow_mid", 0.05, 0.07), 0.3)],
    "disgust": [(*_NASOLABIAL, 0.30), (("nose_wing", -0.12, -0.32), ("nose_wing", -0.22, -0.24), 0.35)],
    "sadness": [(("brow_inner", 0.0, -0.07), ("brow_inner", 0.12, -0.10), 0.25)],
    "fear": [(("brow_inner", 0.0, -0.08), ("brow_mid", 0.0, -0.07), 0.2), (*_FURROW, 0.2)],
    # AU1+2 forehead lines: faint, well above the raised brows (a dark line near a brow reads as the brow)
    "surprise": [(("brow_inner", 0.0, -0.24), ("brow_outer", 0.0, -0.22), 0.12)],
}


@dataclass(frozen=True)
class FaceFrame:
    """The face frame spanned by 5 landmarks (right eye, left eye, nose, right/left mouth corner)."""

    landmarks: np.ndarray
    """(5, 2) float, image coordinates."""
    origin: np.ndarray
    u: np.ndarray
    """Unit vector from the image-left eye to the image-right eye."""
    v: np.ndarray
    """Unit vector perpendicular to `u`, pointing towards the mouth."""
    d: float
    """Inter-ocular distance in pixels."""

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> "FaceFrame":
        lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        right_eye, left_eye = lm[0], lm[1]
        axis = left_eye - right_eye
        d = float(np.hypot(*axis))
        u = axis / d
        v = np.array([-u[1], u[0]])
        return cls(lm, (right_eye + left_eye) / 2, u, v, d)

    def ref(self, name: str, side: int) -> np.ndarray:
        lm = self.landmarks
        if name == "face":
            return self.origin
        if name == "eye":
            return lm[0] if side < 0 else lm[1]
        if name == "nose":
            return lm[2]
        if name == "corner":
            return lm[3] if side < 0 else lm[4]
        if name == "mouth":
            return (lm[3] + lm[4]) / 2
        raise ValueError(f"unknown reference point {name!r}")

    def to_image(self, ref: str, side: int, x: float, y: float) -> np.ndarray:
        # x is measured outward from the midline for paired points (mirrored on the left half)
        sx = x * (side if side else 1)
        return self.ref(ref, side) + self.d * (sx * self.u + y * self.v)

    def vector(self, side: int, out: float, down: float) -> np.ndarray:
        return self.d * ((out * side) * self.u + down * self.v)


def control_points(frame: FaceFrame) -> tuple[list[tuple[str, int]], np.ndarray]:
    """(name, side) keys and their (N, 2) image positions."""
    keys, pts = [], []
    for name, ref, x, y, paired in _POINTS:
        for side in ((-1, 1) if paired else (0,)):
            keys.append((name, side))
            pts.append(frame.to_image(ref, side, x, y))
    return keys, np.array(pts)


def neutralise(image_bgr: np.ndarray, strength: float) -> np.ndarray:
    """The photo with its smile undone at `strength` (0..1; 0 returns it unchanged)."""
    if strength <= 0:
        return image_bgr
    frame = FaceFrame.from_landmarks(detect_landmarks(image_bgr))
    keys, points = control_points(frame)
    h, w = image_bgr.shape[:2]
    field = tps_backward_field(points, points + strength * displacement_targets(frame, keys, NEUTRALISE), (h, w))
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = cv2.remap(image_bgr.astype(np.float32), gx + field[..., 0], gy + field[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT101)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def detect_landmarks(image_bgr: np.ndarray) -> np.ndarray:
    """The 5 RetinaFace landmarks of the largest face, (5, 2) float; raises when there is none."""
    from pipeline.tiny_retinaface import detect_faces

    faces = detect_faces(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    if not faces:
        raise ValueError("RetinaFace found no face in a demo face image")
    face = max(faces, key=lambda f: f.width * f.height)
    return np.array([[p.x, p.y] for p in face.landmarks], dtype=np.float64)


# ------------------------------------------------------------------ thin-plate spline warp


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    # U(r) = r^2 log r^2, with U(0) = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        k = r2 * np.log(r2)
    return np.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0)


def tps_backward_field(src: np.ndarray, dst: np.ndarray, shape: tuple[int, int],
                       step: int = FIELD_STEP) -> np.ndarray:
    """The (H, W, 2) displacement `f` with image(x + f(x)) showing the face moved src → dst.

    A thin-plate spline interpolates the backward displacements `src - dst` at the moved points
    `dst` (Bookstein 1989); the image border is pinned so the warp stays inside the frame.
    """
    h, w = shape
    border = np.array([[x, y] for x in (0, w / 2, w - 1) for y in (0, h / 2, h - 1) if (x, y) != (w / 2, h / 2)])
    ctrl = np.concatenate([dst, border]) / max(h, w)  # normalised: keeps the system well conditioned
    vals = np.concatenate([src - dst, np.zeros_like(border)])
    n = len(ctrl)
    k = _tps_kernel(((ctrl[:, None, :] - ctrl[None, :, :]) ** 2).sum(-1))
    p = np.hstack([np.ones((n, 1)), ctrl])
    a = np.zeros((n + 3, n + 3))
    a[:n, :n], a[:n, n:], a[n:, :n] = k + 1e-8 * np.eye(n), p, p.T
    coef = np.linalg.solve(a, np.vstack([vals, np.zeros((3, 2))]))  # (n + 3, 2)

    gy, gx = np.mgrid[0:h + step:step, 0:w + step:step].astype(np.float64)
    grid = np.stack([gx.ravel(), gy.ravel()], 1) / max(h, w)
    kg = _tps_kernel(((grid[:, None, :] - ctrl[None, :, :]) ** 2).sum(-1))
    coarse = (kg @ coef[:n] + np.hstack([np.ones((len(grid), 1)), grid]) @ coef[n:]).reshape(*gx.shape, 2)
    # the coarse grid covers [0, h + step) x [0, w + step): resize so its nodes land on pixels
    big = cv2.resize(coarse.astype(np.float32), (gx.shape[1] * step, gx.shape[0] * step),
                     interpolation=cv2.INTER_LINEAR)
    off = step // 2  # INTER_LINEAR puts coarse node i at pixel i*step + (step-1)/2
    return np.ascontiguousarray(big[off:off + h, off:off + w])


def blink_layers(frame: FaceFrame, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(backward field, darkening) of closed eyes.

    A thin-plate spline cannot close an eye (two lids pulled onto one line fold the plane), so the
    blink is a local piecewise-linear squash towards a seam: monotonic on each side of it, hence no
    fold-over, fading out across `BLINK_REACH`. The darkening draws the lash line on the seam.
    """
    h, w = shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    field = np.zeros((h, w, 2), np.float32)
    shade = np.zeros((h, w), np.float32)
    half_w, reach = BLINK_REACH[0] * frame.d, BLINK_REACH[1] * frame.d
    for eye in frame.landmarks[:2]:
        seam = eye + BLINK_SEAM * frame.d * frame.v
        e = (gx - seam[0]) * frame.u[0] + (gy - seam[1]) * frame.u[1]  # along the eye line
        f = (gx - seam[0]) * frame.v[0] + (gy - seam[1]) * frame.v[1]  # towards the mouth
        across = np.where(np.abs(e) < half_w, np.cos(0.5 * np.pi * e / half_w) ** 2, 0.0)
        up = -BLINK_UPPER * frame.d * np.clip(1 + f / reach, 0, 1) * (f < 0)
        down = BLINK_LOWER * frame.d * np.clip(1 - f / reach, 0, 1) * (f >= 0)
        shift = across * (up + down)  # along v; |slope| < 1 keeps the map monotonic
        field[..., 0] += (shift * frame.v[0]).astype(np.float32)
        field[..., 1] += (shift * frame.v[1]).astype(np.float32)
        line = np.exp(-0.5 * (f / max(0.8, 0.02 * frame.d)) ** 2) * np.clip(1.25 * across - 0.25, 0, 1)
        shade = np.maximum(shade, (0.45 * line).astype(np.float32))
    return field, shade


def displacement_targets(frame: FaceFrame, keys: list[tuple[str, int]], moves: dict[str, tuple[float, float]],
                         gains: dict[str, float] | None = None) -> np.ndarray:
    """(N, 2) pixel displacement of every control point for one expression at full intensity."""
    gains = gains or {}
    out = np.zeros((len(keys), 2))
    for i, (name, side) in enumerate(keys):
        if name in moves:
            dx, dy = moves[name]
            out[i] = frame.vector(side, dx, dy) * gains.get(name.split("_")[0], 1.0)
    return out


def shading(frame: FaceFrame, keys: list[tuple[str, int]], points: np.ndarray, moved: np.ndarray,
            label: str, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) darkening of class `label` at full intensity (multiply the warped image by 1 - it)."""
    pos = {k: p for k, p in zip(keys, moved)}
    d, scale = frame.d, 16  # cv2 drawing with 4 fractional bits
    shade = np.zeros(shape, np.float32)
    if label in MOUTH_OPENING:
        width, darkness = MOUTH_OPENING[label]
        orig = {k: p for k, p in zip(keys, points)}
        gap = lambda q: float(np.hypot(*(q[("lower_lip", 0)] - q[("upper_lip", 0)])))  # noqa: E731
        half_h = 0.5 * (gap(pos) - gap(orig))
        half_w = 0.5 * width * float(np.hypot(*(pos[("mouth_corner", 1)] - pos[("mouth_corner", -1)])))
        if half_h >= 1:
            centre = (pos[("upper_lip", 0)] + pos[("lower_lip", 0)]) / 2
            angle = float(np.degrees(np.arctan2(frame.u[1], frame.u[0])))
            mask = np.zeros(shape, np.float32)
            cv2.ellipse(mask, tuple(int(c) for c in np.round(centre * scale)),
                        (int(half_w * scale), int(half_h * scale)), angle, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
            shade = np.maximum(shade, darkness * cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.3 * half_h)))
            if label in TEETH:  # a band along the upper lip, inside the opening
                band = np.zeros(shape, np.float32)
                top = pos[("upper_lip", 0)] + 0.35 * half_h * frame.v
                cv2.ellipse(band, tuple(int(c) for c in np.round(top * scale)),
                            (int(0.8 * half_w * scale), int(0.4 * half_h * scale)), angle, 0, 360, 1.0, -1,
                            cv2.LINE_AA, 4)
                band = cv2.GaussianBlur(band * mask, (0, 0), max(0.8, 0.1 * half_h))
                shade = shade * (1 - band) - TEETH[label] * band
    for (name_a, out_a, down_a), (name_b, out_b, down_b), darkness in CREASES.get(label, ()):
        mask = np.zeros(shape, np.float32)
        for side in (-1, 1):
            p = pos[(name_a, side)] + frame.vector(side, out_a, down_a)
            q = pos[(name_b, side)] + frame.vector(side, out_b, down_b)
            cv2.line(mask, tuple(int(c) for c in np.round(p * scale)), tuple(int(c) for c in np.round(q * scale)),
                     1.0, max(1, int(0.03 * d)), cv2.LINE_AA, 4)
        shade = np.maximum(shade, darkness * cv2.GaussianBlur(mask, (0, 0), max(0.8, 0.025 * d)))
    return shade
