"""The demo dataset: short expression videos generated deterministically from real face photos.

Each video shows one real face (`pipeline/assets/faces/`) with one expression episode, in one of two
flavours (`episode`): `transient` (lab datasets: MMI, BU-4DFE, CK+, Oulu) is neutral, then onset →
apex → offset at a random position, then neutral again; `sustained` (in-the-wild datasets: AFEW,
DFEW, FERV39k, MAFW) has the expression at its apex from the first frame, or coming on within the
first 15 % of the frames, and held to the last frame. The
expression is a landmark-driven thin-plate-spline warp of the photo: RetinaFace's 5 landmarks
(detected once per photo) define a face frame, from which brow, eyelid, cheek, nose, lip, jaw and
fixed anchor points are placed; each class moves a subset of them, following the facial action
units of the prototypical expressions (Ekman & Friesen, FACS; e.g. happiness AU6+12, sadness
AU1+4+15, surprise AU1+2+5+26, anger AU4+5+7+23, disgust AU9+10, fear AU1+2+4+5+20+26).
Distractors make the task non-trivial: head translation/rotation/scale drift, blinks anywhere in
the video, and lighting drift (`distractors: basic`); `rich` adds what real videos have besides
(`pipeline/demo/distractors.py`): speech-like mouth motion, out-of-plane head pose, a passing
occluder, white balance, sensor noise, resolution loss and JPEG compression. `rig: au` swaps the
expression rig for an independent one (action units on a 68-point mesh, `pipeline/demo/rig_au.py`),
and `blends: B` adds B morphs of each pair of shipped people (`pipeline/demo/blend.py`): each morph is its
own `subject` (the person `subject_norm` normalises), and the pair and its morphs share one `group` so that
folds never split a family. Whether the expressions read as
intended to a model trained on real faces: `pipeline/demo/realism.py`.

Everything random comes from `numpy.random.default_rng((seed, identity, class, k))`, so a video
does not depend on which other videos are generated, and the same seed gives byte-identical files
(the mp4v encoder of OpenCV's FFmpeg backend is deterministic; `tests/demo` checks it).

    <out_dir>/labels.csv                     video,label,subject,apex_start,apex_end,
                                             episode_start,episode_end,n_frames,group
    <out_dir>/<class>/<identity>_<k>.mp4
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.demo.assets import SOURCES, identities, load_faces
from pipeline.demo.blend import blend_faces, blend_weights, families
from pipeline.demo.distractors import (DISTRACTORS, HarshPlan, RichPlan, camera, harsh_optics, harsh_plan,
                                       occlusion_alpha, pose_homography, rich_plan, speech_layers)
from pipeline.demo.face import (EXPRESSIONS, FaceFrame, blink_layers, control_points, detect_landmarks,
                                displacement_targets, shading, tps_backward_field)
from pipeline.io import atomic_path

CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
LABEL_COLUMNS = ("video", "label", "subject", "apex_start", "apex_end", "episode_start", "episode_end",
                 "n_frames", "group")
APEX_LEVEL = 0.9
"""Frames whose expression intensity is at least this are the apex span written to labels.csv."""
STRENGTH = (0.85, 1.15)
"""How strong a video's expression is at its apex, drawn uniformly per video, relative to the rig's prototype (the
demo's default: posed, full expressions)."""
WEAK = (0.4, 0.8)
"""The apex strength of subtle expressions (bench sources `:weak`): spontaneous and in-the-wild expressions are often
a fraction of a posed one, and a default must not rely on full-strength apexes."""
EPISODES = ("transient", "sustained")
GENERATOR_VERSION = 3
"""Bumped whenever the output for the same options changes (a revised rig): the demo adapter records it,
so a folder made by an older generator is made again instead of being read back."""
RIGS = ("tps", "au")
"""Expression rigs: `tps`, a thin-plate-spline warp of ~25 control points with per-class displacement
tables (pipeline/demo/face.py); `au`, action-unit compositions on a 68-point mesh with a piecewise-affine
warp (pipeline/demo/rig_au.py). Two independent rigs: a head that learned one rig's artefacts fails on
the other."""
SUSTAINED_ONSET_WITHIN = 0.15
"""A sustained expression reaches its apex within this share of the frames (or is on from frame 0)."""

# ------------------------------------------------------------------ one video's time course


@dataclass(frozen=True)
class VideoPlan:
    """Per-frame curves of one video; everything the renderer varies over time."""

    intensity: np.ndarray
    """(T,) expression intensity 0..1 (1 at the apex)."""
    blink: np.ndarray
    """(T,) eye closure 0..1."""
    motion: np.ndarray
    """(T, 4) head motion: dx, dy (fraction of the frame), rotation (degrees), log scale."""
    gain: np.ndarray
    """(T,) global brightness gain."""
    tilt: np.ndarray
    """(T, 2) brightness gradient along x and y (fraction per half frame)."""
    amplitude: float
    """Expression strength of this video (scales the displacements)."""

    @property
    def n_frames(self) -> int:
        return len(self.intensity)

    def episode(self) -> tuple[int, int]:
        idx = np.flatnonzero(self.intensity > 0)
        return int(idx[0]), int(idx[-1])

    def apex(self) -> tuple[int, int]:
        idx = np.flatnonzero(self.intensity >= APEX_LEVEL)
        return int(idx[0]), int(idx[-1])


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, n_waves: int = 3) -> np.ndarray:
    """(n,) slow random curve, amplitude ~1: a few sinusoids of 0.1–0.6 Hz plus a linear drift."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for _ in range(n_waves):
        out += np.sin(2 * np.pi * rng.uniform(0.1, 0.6) * t + rng.uniform(0, 2 * np.pi)) / n_waves
    return out + rng.uniform(-0.5, 0.5) * t / max(t[-1], 1e-9)


def _ramp(k: int) -> np.ndarray:
    """(k,) smooth rise from 0 to 1, both ends excluded."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(1, k + 1) / (k + 1)))


def _plateau(rng: np.random.Generator, k: int, fps: float) -> np.ndarray:
    """(k,) a living apex, never under APEX_LEVEL."""
    return np.clip(1.0 - 0.04 * np.abs(_smooth_noise(rng, k, fps)), APEX_LEVEL + 0.02, 1.0)


def _transient(rng: np.random.Generator, n: int, n_frames: tuple[int, int], fps: float) -> np.ndarray:
    """Neutral → onset → apex → offset → neutral, the episode at a random position."""
    onset = max(4, round(n * rng.uniform(0.12, 0.2)))
    apex = max(4, round(n * rng.uniform(0.15, 0.3)))
    offset = max(4, round(n * rng.uniform(0.12, 0.2)))
    margin = max(3, round(0.08 * n))
    if onset + apex + offset > n - 2 * margin:
        raise ValueError(f"n_frames {n_frames} is too short for an expression episode (got {n})")
    start = int(rng.integers(margin, n - margin - (onset + apex + offset) + 1))
    intensity = np.zeros(n)
    intensity[start:start + onset] = _ramp(onset)
    intensity[start + onset:start + onset + apex] = _plateau(rng, apex, fps)
    intensity[start + onset + apex:start + onset + apex + offset] = _ramp(offset)[::-1]
    return intensity


def _sustained(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Half the videos at the apex from frame 0; the others neutral for a few frames, then an onset
    that reaches the apex within SUSTAINED_ONSET_WITHIN of the frames; held to the last frame."""
    reach = max(2, round(SUSTAINED_ONSET_WITHIN * n))  # the apex starts at or before this frame
    if rng.uniform() < 0.5:
        apex_start = 0
        intensity = np.zeros(n)
    else:
        onset = max(2, round(reach * rng.uniform(0.4, 0.8)))
        start = int(rng.integers(0, reach - onset + 1))
        intensity = np.zeros(n)
        intensity[start:start + onset] = _ramp(onset)
        apex_start = start + onset
    intensity[apex_start:] = _plateau(rng, n - apex_start, fps)
    return intensity


def plan_video(rng: np.random.Generator, n_frames: tuple[int, int], fps: float,
               episode: str = "transient", strength: tuple[float, float] = STRENGTH) -> VideoPlan:
    """Random episode position and distractors for one video; its apex strength uniform in `strength`."""
    if episode not in EPISODES:
        raise ValueError(f"episode must be one of {EPISODES}, got {episode!r}")
    n = int(rng.integers(n_frames[0], n_frames[1] + 1))
    intensity = _transient(rng, n, n_frames, fps) if episode == "transient" else _sustained(rng, n, fps)

    # blinks every 1.5–4 s anywhere in the video (also in the neutral parts), ~0.2–0.3 s long
    blink = np.zeros(n)
    t = int(rng.integers(0, round(1.5 * fps)))
    while t < n:
        length = int(rng.integers(round(0.2 * fps), round(0.3 * fps) + 1))
        shape = np.sin(np.pi * np.arange(1, length + 1) / (length + 1)) ** 0.7
        end = min(n, t + length)
        blink[t:end] = np.maximum(blink[t:end], shape[:end - t])
        t += int(rng.integers(round(1.5 * fps), round(4 * fps) + 1))

    motion = np.stack([
        0.025 * _smooth_noise(rng, n, fps) + rng.uniform(-0.02, 0.02),   # dx
        0.02 * _smooth_noise(rng, n, fps) + rng.uniform(-0.02, 0.02),    # dy
        3.0 * _smooth_noise(rng, n, fps) + rng.uniform(-3, 3),           # roll, degrees
        0.03 * _smooth_noise(rng, n, fps) + rng.uniform(-0.06, 0.06),    # log scale
    ], 1)
    gain = np.exp(0.08 * _smooth_noise(rng, n, fps) + rng.uniform(-0.12, 0.12))
    tilt = np.stack([0.08 * _smooth_noise(rng, n, fps) + rng.uniform(-0.1, 0.1),
                     0.05 * _smooth_noise(rng, n, fps)], 1)
    # the same draw whatever the range, so a set made with another `strength` differs in nothing else
    return VideoPlan(intensity, blink, motion, gain, tilt, float(rng.uniform(*strength)))


# ------------------------------------------------------------------ rendering


@dataclass(frozen=True)
class FaceModel:
    """One face photo with its landmarks, control points and blink field, computed once."""

    identity: str
    image: np.ndarray
    frame: FaceFrame
    keys: list
    points: np.ndarray
    blink_field: np.ndarray
    blink_shade: np.ndarray

    @classmethod
    def build(cls, identity: str, image: np.ndarray) -> "FaceModel":
        frame = FaceFrame.from_landmarks(detect_landmarks(image))
        keys, points = control_points(frame)
        return cls(identity, image, frame, keys, points, *blink_layers(frame, image.shape[:2]))


REGIONS = ("brow", "lid", "mouth", "upper", "lower", "cheek", "nose", "chin", "jaw")
"""Point-name prefixes whose displacement gain varies per video (people differ in how much each
region takes part in an expression)."""


def expression_layers(face: FaceModel, label: str, amplitude: float = 1.0,
                      gains: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(backward field at apex, mouth-shading mask at apex) for one video of class `label`."""
    disp = amplitude * displacement_targets(face.frame, face.keys, EXPRESSIONS[label], gains)
    field = tps_backward_field(face.points, face.points + disp, face.image.shape[:2])
    shade = shading(face.frame, face.keys, face.points, face.points + disp, label, face.image.shape[:2])
    return field, shade


@dataclass(frozen=True)
class RichRender:
    """What the rich distractors add to one video: their plan, the face's speech layers, a noise stream."""

    plan: RichPlan
    speech_field: np.ndarray
    speech_shade: np.ndarray
    rng: np.random.Generator
    harsh: HarshPlan | None = None


def render_frames(face: FaceModel, field: np.ndarray, shade: np.ndarray, plan: VideoPlan, size: int,
                  rich: RichRender | None = None):
    """Yield the video's BGR uint8 frames (size x size)."""
    h, w = face.image.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp_x = np.linspace(-1, 1, size, dtype=np.float32)[None, :]
    ramp_y = np.linspace(-1, 1, size, dtype=np.float32)[:, None]
    centre = face.frame.origin + 0.5 * face.frame.d * face.frame.v  # rotate about the mid-face
    image = face.image.astype(np.float32)
    out = None
    for t in range(plan.n_frames):
        if rich is not None and rich.harsh is not None and t % rich.harsh.hold:
            yield out  # a slower camera: the last frame again
            continue
        a, b = float(plan.intensity[t]), float(plan.blink[t])
        s = float(rich.plan.speech[t]) if rich else 0.0
        fx = gx + a * field[..., 0] + b * face.blink_field[..., 0]
        fy = gy + a * field[..., 1] + b * face.blink_field[..., 1]
        if s > 0:
            fx, fy = fx + s * rich.speech_field[..., 0], fy + s * rich.speech_field[..., 1]
        warped = cv2.remap(image, fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        if a > 0 or b > 0 or s > 0:
            dark = a * shade + b * face.blink_shade
            warped *= (1.0 - (dark + s * rich.speech_shade if s > 0 else dark))[..., None]
        dx, dy, angle, log_s = plan.motion[t]
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle),
                                    float(size / max(h, w) * np.exp(log_s)))
        # place the rotation centre where it would land without motion, then shift by dx, dy
        m[:, 2] += (centre * size / max(h, w) - centre) + np.array([dx, dy]) * size
        if rich is None:
            frame = cv2.warpAffine(warped, m, (size, size), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT101)
        else:
            full = pose_homography(*rich.plan.pose[t], m @ np.array([*centre, 1.0]), size) @ np.vstack([m, [0, 0, 1]])
            frame = cv2.warpPerspective(warped, full, (size, size), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT101)
        light = plan.gain[t] * (1.0 + plan.tilt[t, 0] * ramp_x + plan.tilt[t, 1] * ramp_y)
        if rich is None:
            yield np.clip(frame * light[..., None] + 0.5, 0, 255).astype(np.uint8)
            continue
        frame = frame * light[..., None]
        occ = rich.plan.occluder
        alpha = occlusion_alpha(occ, t, face.frame, size, full, size / max(h, w) * float(np.exp(log_s))) if occ else None
        if alpha is not None:
            shaded = np.asarray(occ.colour, np.float32) * (0.8 + 0.2 * ramp_y[..., None]) * plan.gain[t]
            frame = frame * (1 - alpha[..., None]) + shaded * alpha[..., None]
        if rich.harsh is not None:
            frame = harsh_optics(frame, rich.harsh, t, ramp_x, ramp_y)
        out = camera(frame, rich.plan, rich.rng)
        yield out


def write_video(path: Path, frames, fps: float, size: int) -> int:
    """Write frames as mp4v; atomic (a temporary name with the same extension, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot open an mp4v writer for {tmp}")
    n = 0
    try:
        for frame in frames:
            writer.write(frame)
            n += 1
    finally:
        writer.release()
    os.replace(tmp, path)
    return n


# ------------------------------------------------------------------ the dataset


@dataclass(frozen=True)
class DemoVideo:
    """One row of labels.csv."""

    video: str
    label: str
    subject: str
    apex_start: int
    apex_end: int
    episode_start: int
    episode_end: int
    n_frames: int
    group: str = ""
    """The fold key when it is not the person (a blend's family), else ''."""


def _video_rng(seed: int, identity_index: int, label: str, k: int, stream: int | None = None) -> np.random.Generator:
    """The random stream of one video; `stream` 1, 2 and 3 are the rich distractors', the `au` rig's and the
    harsh additions', so adding them leaves the basic plan (stream None) exactly as it was."""
    key = [seed, identity_index, CLASSES.index(label), k]
    return np.random.default_rng(key if stream is None else [*key, stream])


def make_video(face: FaceModel, identity_index: int, label: str, k: int, *, seed: int,
               n_frames: tuple[int, int], fps: float, episode: str = "transient", rig: str = "tps",
               group: str = "", strength: tuple[float, float] = STRENGTH
               ) -> tuple[DemoVideo, VideoPlan, np.ndarray, np.ndarray]:
    """Plan one video and compute its warp layers (no frames rendered yet)."""
    rng = _video_rng(seed, identity_index, label, k)
    plan = plan_video(rng, n_frames, fps, episode, strength)
    gains = {g: float(rng.uniform(0.8, 1.2)) for g in REGIONS}
    if rig == "tps":
        field, shade = expression_layers(face, label, plan.amplitude, gains)
    elif rig == "au":
        from pipeline.demo.rig_au import au_expression_layers

        field, shade = au_expression_layers(face, label, _video_rng(seed, identity_index, label, k, 2), plan.amplitude)
    else:
        raise ValueError(f"rig must be one of {RIGS}, got {rig!r}")
    (e0, e1), (a0, a1) = plan.episode(), plan.apex()
    row = DemoVideo(f"{label}/{face.identity}_{k}.mp4", label, face.identity, a0, a1, e0, e1, plan.n_frames, group)
    return row, plan, field, shade


@dataclass(frozen=True)
class Person:
    """One identity of the generated set: a shipped person or a blend of two."""

    name: str
    group: str
    """The fold key when blending: the family (parents and their blends); '' otherwise (the person's name is)."""
    index: int
    """Keys the person's random streams (a shipped person's place in `identities()`; 100 + for blends)."""
    photos: list


def load_models(faces_dir: Path | None = None, n_identities: int | None = None) -> list[list[FaceModel]]:
    """Per identity (the first `n_identities` in `identities()` order) the models of its photos."""
    images = load_faces(faces_dir) if faces_dir else load_faces()
    return [[FaceModel.build(name, im) for im in images[name]] for name in identities(n_identities)]


def people(n_identities: int | None = None, blends: int = 0, parents: bool = True) -> list[Person]:
    """The shipped people, plus `blends` morphs of each consecutive pair of them (`pipeline.demo.blend`).

    `parents=False` keeps only the morphs: faces that no default was chosen on (a held-out set of people)."""
    if not parents and blends < 1:
        raise ValueError("parents=False keeps only the blends, so it needs blends >= 1")
    models = load_models(n_identities=n_identities)
    if blends == 0:
        return [Person(photos[0].identity, "", i, photos) for i, photos in enumerate(models)]
    by_name = {photos[0].identity: (i, photos) for i, photos in enumerate(models)}
    out = []
    for f, family in enumerate(families(tuple(by_name))):
        group = "-".join(family)
        if parents:
            out += [Person(name, group, by_name[name][0], by_name[name][1]) for name in family]
        if len(family) < 2:
            continue
        (a,), (b,) = (by_name[family[0]][1][:1], by_name[family[1]][1][:1])
        for j, w in enumerate(blend_weights(blends)):
            name = f"{family[0]}-{family[1]}-{j + 1}"
            image = blend_faces(a.image, a.frame.landmarks, b.image, b.frame.landmarks, w)
            out.append(Person(name, group, 100 + 10 * f + j, [FaceModel.build(name, image)]))
    return out


def rich_render(face: FaceModel, identity_index: int, label: str, k: int, *, seed: int, n: int,
                fps: float, harsh: bool = False) -> RichRender:
    """The rich distractors of one video (their own random stream) and, with `harsh`, its additions (a third)."""
    rng = _video_rng(seed, identity_index, label, k, 1)
    field, shade = speech_layers(face.frame, face.keys, face.points, face.image.shape[:2])
    plan = rich_plan(rng, n, fps)
    if not harsh:
        return RichRender(plan, field, shade, rng)
    return RichRender(plan, field, shade, rng, harsh_plan(_video_rng(seed, identity_index, label, k, 3), n, fps))


def generate_demo(out_dir: Path, *, seed: int = 0, videos_per_class_per_identity: int = 2,
                  classes: tuple[str, ...] = CLASSES, n_frames: tuple[int, int] = (60, 90), size: int = 256,
                  fps: float = 25, episode: str = "transient", n_identities: int | None = None,
                  rig: str = "tps", distractors: str = "basic", blends: int = 0, parents: bool = True,
                  strength: tuple[float, float] = STRENGTH) -> Path:
    """Write the demo videos and `labels.csv` under `out_dir`; returns the path of `labels.csv`.

    `parents=False`: only the `blends` (new faces, `people`), not the shipped people they are made from.
    `strength`: the range of each video's apex strength (`STRENGTH`; `WEAK` for subtle expressions).

    `labels.csv` is written last (atomically), so its presence means the set is complete.
    """
    unknown = [c for c in classes if c not in EXPRESSIONS]
    if unknown:
        raise ValueError(f"unknown demo classes {unknown}; choose from {sorted(EXPRESSIONS)}")
    if not (1 <= n_frames[0] <= n_frames[1]):
        raise ValueError(f"n_frames must be (min, max) with 1 <= min <= max, got {n_frames}")
    if videos_per_class_per_identity < 1:
        raise ValueError(f"videos_per_class_per_identity must be >= 1, got {videos_per_class_per_identity}")
    for name, value, allowed in (("episode", episode, EPISODES), ("rig", rig, RIGS),
                                 ("distractors", distractors, DISTRACTORS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if blends < 0:
        raise ValueError(f"blends must be >= 0, got {blends}")
    if not 0 < strength[0] <= strength[1]:
        raise ValueError(f"strength must be (min, max) with 0 < min <= max, got {tuple(strength)}")
    out_dir = Path(out_dir)
    rows = []
    for person in people(n_identities, blends, parents):
        for label in classes:
            for k in range(videos_per_class_per_identity):
                face = person.photos[k % len(person.photos)]  # alternate between a person's photos
                row, plan, field, shade = make_video(face, person.index, label, k, seed=seed, n_frames=n_frames,
                                                     fps=fps, episode=episode, rig=rig, group=person.group,
                                                     strength=strength)
                rich = (rich_render(face, person.index, label, k, seed=seed, n=plan.n_frames, fps=fps,
                                    harsh=distractors == "harsh") if distractors != "basic" else None)
                written = write_video(out_dir / row.video, render_frames(face, field, shade, plan, size, rich), fps, size)
                assert written == row.n_frames, (row.video, written, row.n_frames)
                rows.append(row)
    labels = out_dir / "labels.csv"
    with atomic_path(labels) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        for r in rows:
            writer.writerow([getattr(r, c) for c in LABEL_COLUMNS])
    return labels


__all__ = ["CLASSES", "STRENGTH", "WEAK", "EPISODES", "RIGS", "DISTRACTORS", "EXPRESSIONS", "SOURCES", "DemoVideo", "FaceModel", "VideoPlan", "generate_demo",
           "plan_video", "render_frames"]
