"""Generators of awkward inputs for the reliability tests: every file is made here, from the real
clips in tests/data/videos, with OpenCV or PyAV (no ffmpeg binary, nothing downloaded)."""
from __future__ import annotations

import fractions
import wave
from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np

from tests.conftest import VIDEOS, decode


def real_frames(n: int, name: str = "single_face.mp4") -> list[np.ndarray]:
    """The first `n` frames (BGR) of a real clip."""
    return decode(VIDEOS / name, n)


def write_cv2(path: Path, frames: Sequence[np.ndarray], fps: float = 25.0, color: bool = True) -> Path:
    """mp4v through cv2.VideoWriter; `color=False` writes single-channel frames (a grey video)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h), color)
    assert out.isOpened(), path
    for f in frames:
        out.write(f)
    out.release()
    return path


def write_av(path: Path, frames: Sequence[np.ndarray], fps: int = 25, *, pts_ms: Sequence[int] | None = None,
             rotation: int | None = None, faststart: bool = False) -> Path:
    """mpeg4 in mp4 through PyAV: custom timestamps (variable frame rate), a display-matrix rotation
    (counter-clockwise degrees, as phones record), or the index (moov) before the data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        if rotation is not None:
            s.set_display_rotation(rotation)
        if pts_ms is not None:
            s.time_base = fractions.Fraction(1, 1000)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[..., ::-1]), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], fractions.Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_audio_only(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """An AAC-in-MP4 file with one audio stream and no video (what a phone's voice memo is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_wav_as_mp4(path: Path, rate: int = 8000) -> Path:
    """A valid PCM WAV named `.mp4` (the fallback audio-only file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.zeros(rate, np.int16).tobytes())
    return path


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """The first `fraction` of `src`'s bytes (an interrupted copy or download)."""
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def huge_frames(frames: Sequence[np.ndarray], size: int = 4000, scale: int = 4) -> list[np.ndarray]:
    """Each real frame upscaled `scale`x and pasted into a black size x size canvas."""
    out = []
    for f in frames:
        up = cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)[:size - 400, :size - 200]
        canvas = np.zeros((size, size, 3), np.uint8)
        canvas[400:400 + up.shape[0], 200:200 + up.shape[1]] = up
        out.append(canvas)
    return out


def long_video(path: Path, n_frames: int = 600, size: tuple[int, int] = (160, 120)) -> Path:
    """A synthetic video whose frame k carries k in its pixels (for memory and order checks)."""
    w, h = size
    frames = []
    for k in range(n_frames):
        f = np.full((h, w, 3), (k * 7) % 256, np.uint8)
        cv2.putText(f, str(k), (5, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        frames.append(f)
    return write_cv2(path, frames)
