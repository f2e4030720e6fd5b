"""Distractors that real face videos have and the basic demo lacks (issue 31): speech-like mouth
motion, out-of-plane head pose, a passing occluder, camera white balance, sensor noise, resolution
loss and compression. `harsh` adds, from a third random stream, what neither other set has: motion
blur, a cast shadow crossing the face, a gamma curve and a lower-frame-rate camera. No default was
chosen on it (bench/results/robust_harsh.md): it stands in for the held-back videos' "other distractors".

They are drawn from their own random stream (`rich_plan`), so `distractors: basic` videos stay
byte-identical to what they were, and they never depend on the expression: a head that reads them as
a class learns nothing that holds on another source.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.demo.face import FaceFrame, displacement_targets, tps_backward_field

DISTRACTORS = ("basic", "rich", "harsh")

# Speech: the jaw drops and the lips part a little, the corners move in (units of the inter-ocular
# distance at full opening; a syllable opens the mouth less than a surprise's AU26+27).
SPEECH_MOVES = {
    "lower_lip": (0.0, 0.16), "lower_lip_side": (-0.02, 0.13), "chin": (0.0, 0.16), "jaw": (0.0, 0.08),
    "upper_lip": (0.0, -0.02), "mouth_corner": (-0.03, 0.03),
}
SPEECH_DARKNESS = 0.6
OCCLUDER_PLACES = ("mouth", "cheek", "eye")
"""Where a passing occluder (a hand, a cup, a microphone) covers the face: centre in the face frame."""
_PLACE_CENTRE = {"mouth": (0.0, 1.15), "cheek": (0.75, 0.75), "eye": (0.55, 0.05)}


@dataclass(frozen=True)
class Occluder:
    place: str
    t0: int
    t1: int
    """Frames [t0, t1) during which it covers the face (it slides in and out over a few frames)."""
    radius: float
    """Half-size in units of the inter-ocular distance."""
    colour: tuple[float, float, float]
    """BGR, 0..255."""
    side: int
    """-1 image-left, +1 image-right (for `cheek` and `eye`)."""


@dataclass(frozen=True)
class RichPlan:
    """Per-frame curves and per-video settings of the rich distractors."""

    speech: np.ndarray
    """(T,) mouth opening of speech-like motion, 0..1."""
    pose: np.ndarray
    """(T, 2) yaw and pitch in degrees (a planar face seen from another angle)."""
    occluder: Occluder | None
    white_balance: np.ndarray
    """(3,) BGR gains."""
    noise: float
    """Sensor noise, grey levels (std)."""
    downscale: float
    """Resolution loss: frames are shrunk by this factor and enlarged again (1 = none)."""
    jpeg_quality: int
    """Per-frame JPEG round trip before encoding (0 = none)."""


def _slow(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    t = np.arange(n) / fps
    return sum(np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t + rng.uniform(0, 2 * np.pi)) for _ in range(3)) / 3


def rich_plan(rng: np.random.Generator, n: int, fps: float) -> RichPlan:
    """Random rich distractors for a video of `n` frames."""
    speech = np.zeros(n)
    t = np.arange(n) / fps
    for _ in range(int(rng.integers(0, 3))):  # 0-2 talking bursts anywhere in the video
        length = int(rng.integers(round(0.6 * fps), round(2.0 * fps) + 1))
        start = int(rng.integers(0, max(1, n - length // 2)))
        end = min(n, start + length)
        rate = rng.uniform(2.5, 5.0)  # syllables per second
        envelope = np.sin(np.pi * (np.arange(end - start) + 0.5) / length) ** 0.5
        syllables = np.abs(np.sin(np.pi * rate * t[start:end] + rng.uniform(0, np.pi))) ** 1.5
        speech[start:end] = np.maximum(speech[start:end], rng.uniform(0.4, 1.0) * envelope * syllables)
    pose = np.stack([rng.uniform(-12, 12) + 8 * _slow(rng, n, fps), rng.uniform(-8, 8) + 5 * _slow(rng, n, fps)], 1)
    occluder = None
    if rng.uniform() < 0.35:
        length = int(rng.integers(max(2, n // 6), max(3, n // 2)))
        t0 = int(rng.integers(0, max(1, n - length)))
        occluder = Occluder(str(rng.choice(OCCLUDER_PLACES)), t0, t0 + length, float(rng.uniform(0.3, 0.5)),
                            tuple(float(c) for c in rng.uniform([40, 60, 90], [150, 170, 220])),
                            int(rng.choice([-1, 1])))
    white_balance = np.exp(rng.normal(0, 0.06, 3))
    noise = float(rng.uniform(0, 6))
    downscale = float(rng.choice([1.0, 1.0, 0.7, 0.5]))
    jpeg_quality = int(rng.choice([0, 85, 60, 40]))
    return RichPlan(speech, pose, occluder, white_balance, noise, downscale, jpeg_quality)


@dataclass(frozen=True)
class HarshPlan:
    """What `harsh` adds to a video's rich distractors."""

    blur: int
    """Motion blur: length in pixels of the output frame (1 = none)."""
    blur_angle: float
    """Its direction, degrees."""
    shadow: np.ndarray
    """(T,) where a cast shadow's edge crosses the frame, -1..1 along `shadow_angle` (it drifts slowly)."""
    shadow_angle: float
    shadow_depth: float
    """Light lost in the shadow, 0..1."""
    gamma: float
    """The camera's tone curve, out = 255 (in / 255) ** gamma."""
    hold: int
    """Each frame is shown this many times (a camera at fps / hold, resampled to fps)."""


def harsh_plan(rng: np.random.Generator, n: int, fps: float) -> HarshPlan:
    """Random harsh additions for a video of `n` frames."""
    return HarshPlan(blur=int(rng.choice([1, 3, 5, 7])),
                     blur_angle=float(rng.uniform(0, 180)),
                     shadow=np.clip(rng.uniform(-0.6, 0.6) + 0.5 * _slow(rng, n, fps), -1, 1),
                     shadow_angle=float(rng.uniform(0, 2 * np.pi)), shadow_depth=float(rng.uniform(0.25, 0.55)),
                     gamma=float(np.exp(rng.uniform(-0.35, 0.35))), hold=int(rng.choice([1, 2, 2, 3])))


def harsh_optics(frame: np.ndarray, plan: HarshPlan, t: int, ramp_x: np.ndarray, ramp_y: np.ndarray) -> np.ndarray:
    """A cast shadow, motion blur and the tone curve on a float BGR frame (before the camera's noise and JPEG)."""
    along = np.cos(plan.shadow_angle) * ramp_x + np.sin(plan.shadow_angle) * ramp_y  # (size, size), -1.4..1.4
    soft = 1.0 / (1.0 + np.exp(-(along - plan.shadow[t]) / 0.08))  # a penumbra a few percent of the frame wide
    out = frame * (1.0 - plan.shadow_depth * soft)[..., None]
    if plan.blur > 1:
        kernel = np.zeros((plan.blur, plan.blur), np.float32)
        kernel[plan.blur // 2, :] = 1.0 / plan.blur
        rot = cv2.getRotationMatrix2D(((plan.blur - 1) / 2, (plan.blur - 1) / 2), plan.blur_angle, 1.0)
        kernel = cv2.warpAffine(kernel, rot, (plan.blur, plan.blur))
        out = cv2.filter2D(out, -1, kernel / max(float(kernel.sum()), 1e-6), borderType=cv2.BORDER_REFLECT101)
    return 255.0 * (np.clip(out, 0, 255) / 255.0) ** plan.gamma


def speech_layers(frame: FaceFrame, keys: list, points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(backward field, darkening) of a fully open speaking mouth."""
    disp = displacement_targets(frame, keys, SPEECH_MOVES)
    field = tps_backward_field(points, points + disp, shape)
    pos = {k: p for k, p in zip(keys, points + disp)}
    lip_gap = float(np.hypot(*(pos[("lower_lip", 0)] - pos[("upper_lip", 0)]))) - 0.23 * frame.d
    shade = np.zeros(shape, np.float32)
    if lip_gap > 1:
        centre = (pos[("upper_lip", 0)] + pos[("lower_lip", 0)]) / 2
        half_w = 0.3 * float(np.hypot(*(pos[("mouth_corner", 1)] - pos[("mouth_corner", -1)])))
        angle = float(np.degrees(np.arctan2(frame.u[1], frame.u[0])))
        cv2.ellipse(shade, tuple(int(c) for c in np.round(centre * 16)), (int(half_w * 16), int(lip_gap * 8)),
                    angle, 0, 360, SPEECH_DARKNESS, -1, cv2.LINE_AA, 4)
        shade = cv2.GaussianBlur(shade, (0, 0), max(1.0, 0.15 * lip_gap))
    return field, shade


def pose_homography(yaw: float, pitch: float, centre: np.ndarray, size: int) -> np.ndarray:
    """3x3 homography of a plane through `centre` seen rotated by yaw and pitch (degrees)."""
    f = 1.5 * size  # a moderate lens: perspective foreshortening without extreme distortion
    k = np.array([[f, 0, centre[0]], [0, f, centre[1]], [0, 0, 1.0]])
    ry, rp = np.radians(yaw), np.radians(pitch)
    r_yaw = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    r_pitch = np.array([[1, 0, 0], [0, np.cos(rp), -np.sin(rp)], [0, np.sin(rp), np.cos(rp)]])
    return k @ r_yaw @ r_pitch @ np.linalg.inv(k)


def occlusion_alpha(occ: Occluder, t: int, frame: FaceFrame, size: int, transform: np.ndarray,
                    pixel_scale: float) -> np.ndarray | None:
    """(size, size) coverage of the occluder at frame t (None when it is away); `transform` maps the
    photo to the output frame (3x3), `pixel_scale` is its zoom."""
    if not occ.t0 <= t < occ.t1:
        return None
    ramp = max(2, (occ.t1 - occ.t0) // 5)
    slide = min(1.0, (t - occ.t0 + 1) / ramp, (occ.t1 - t) / ramp)  # slides in from below, and back out
    cx, cy = _PLACE_CENTRE[occ.place]
    centre = frame.origin + frame.d * ((cx * occ.side) * frame.u + (cy + 1.5 * (1 - slide)) * frame.v)
    p = transform @ np.array([*centre, 1.0])
    p = p[:2] / p[2]
    r = occ.radius * frame.d * pixel_scale
    alpha = np.zeros((size, size), np.float32)
    cv2.ellipse(alpha, (int(p[0] * 16), int(p[1] * 16)), (int(r * 16), int(1.4 * r * 16)), 15.0 * occ.side, 0, 360,
                1.0, -1, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(alpha, (0, 0), max(1.0, 0.08 * r))


def camera(frame: np.ndarray, plan: RichPlan, rng: np.random.Generator) -> np.ndarray:
    """White balance, resolution loss, sensor noise and a JPEG round trip on a float BGR frame."""
    out = frame * plan.white_balance
    if plan.downscale < 1:
        h, w = out.shape[:2]
        small = cv2.resize(out, (max(8, round(w * plan.downscale)), max(8, round(h * plan.downscale))),
                           interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if plan.noise > 0:
        out = out + rng.normal(0, plan.noise, out.shape).astype(np.float32)
    out8 = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if plan.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", out8, [cv2.IMWRITE_JPEG_QUALITY, plan.jpeg_quality])
        out8 = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out8
