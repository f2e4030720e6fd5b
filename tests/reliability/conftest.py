"""One batch of good and broken inputs, put through manifest → detect → resample → extract once.

The batch is listed by the `csv` adapter so that one CSV can name a duplicate, an unknown label and
a missing file beside the real (and awkward but valid) videos. Every file is generated here.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import pytest

from tests.conftest import FAST, VIDEOS, cut_clip, write_params
from tests.reliability import media

# Extract on the detector's own MobileNet body: ~10x faster than ResNet-18 on CPU, same code path.
RELIABILITY = {**FAST, "extract": {**FAST["extract"], "backbone": "retinaface_mnet"}}

# video_id → (stage, kind, a word of the message) for every input that must fail, and where.
EXPECTED_FAILURES = {
    "bad/empty": ("manifest", "unreadable", "zero-byte"),
    "bad/truncated": ("manifest", "unreadable", "cannot open"),
    "bad/text": ("manifest", "unreadable", "cannot open"),
    "bad/audio_only": ("manifest", "unreadable", "cannot open"),
    "bad/missing": ("manifest", "missing", "not found"),
    "good/clip": ("manifest", "duplicate_id", "already used"),
    "bad/bored": ("manifest", "unknown_label", "bored"),
    "vanished/clip": ("extract", "short", "not decodable"),
}
GOOD = ["good/clip", "vidéo été/clip ü", "gray/clip", "gray_frames", "rotated/clip", "vfr/clip", "one/frame",
        "huge/clip", "truncated_faststart/clip"]
VFR_PTS_MS = [0, 40, 80, 200, 240, 250, 260, 400, 440, 480, 900, 940, 980, 1020, 1030, 1040, 1300, 1340, 1380,
              1420, 1460, 1500, 1540, 1580]


def make_bad_batch(root: Path) -> Path:
    """Write the videos and the CSV listing them; returns the CSV path."""
    frames = media.real_frames(24)
    cut_clip(VIDEOS / "single_face.mp4", root / "good" / "clip.mp4", 24)
    cut_clip(VIDEOS / "single_face.mp4", root / "vidéo été" / "clip ü.mp4", 24)
    media.write_cv2(root / "gray" / "clip.mp4", [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames], color=False)
    (root / "gray_frames").mkdir()
    for i, f in enumerate(frames[:12]):
        cv2.imwrite(str(root / "gray_frames" / f"{i + 1}.png"), cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    # Stored sideways (as a phone held upright records), displayed upright through the rotation matrix.
    media.write_av(root / "rotated" / "clip.mp4", [cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE) for f in frames],
                   rotation=90)
    media.write_av(root / "vfr" / "clip.mp4", frames, fps=100, pts_ms=VFR_PTS_MS)  # 10 ms clock
    media.write_cv2(root / "one" / "frame.mp4", frames[:1])
    media.write_cv2(root / "huge" / "clip.mp4", media.huge_frames(frames[:3]))
    full = media.write_av(root / "_src" / "faststart.mp4", frames, faststart=True)
    media.truncate(full, root / "truncated_faststart" / "clip.mp4", 0.6)
    cut_clip(VIDEOS / "single_face.mp4", root / "vanished" / "clip.mp4", 24)
    (root / "bad").mkdir()
    (root / "bad" / "empty.mp4").write_bytes(b"")
    media.truncate(root / "good" / "clip.mp4", root / "bad" / "truncated.mp4", 0.5)
    (root / "bad" / "text.mp4").write_text("this is a text file, not a video\n")
    media.write_audio_only(root / "bad" / "audio_only.mp4")
    rows = [("good/clip.mp4", "happiness", "s01"), ("vidéo été/clip ü.mp4", "sadness", "s02"),
            ("gray/clip.mp4", "surprise", "s03"), ("gray_frames", "anger", "s04"),
            ("rotated/clip.mp4", "happiness", "s05"), ("vfr/clip.mp4", "sadness", "s06"),
            ("one/frame.mp4", "surprise", "s07"), ("huge/clip.mp4", "anger", "s08"),
            ("truncated_faststart/clip.mp4", "fear", "s09"), ("vanished/clip.mp4", "fear", "s10"),
            ("bad/empty.mp4", "happiness", "s11"), ("bad/truncated.mp4", "happiness", "s11"),
            ("bad/text.mp4", "sadness", "s11"), ("bad/audio_only.mp4", "sadness", "s11"),
            ("bad/missing.mp4", "anger", "s11"),
            ("good/clip.mp4", "happiness", "s01"),  # the same video listed twice: one id, two rows
            ("bad/bored.mp4", "bored", "s12")]  # a label no dataset knows
    listing = root / "list.csv"
    with listing.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video", "label", "subject"])
        w.writerows(rows)
    return listing


@pytest.fixture(scope="session")
def bad_batch(tmp_path_factory) -> dict:
    """manifest → detect → resample → (one video replaced by a shorter file) → extract, in process.

The replaced file stays replaced: later runs on copies of this dataset see what extract saw."""
    from pipeline.config import load_config
    from pipeline.registry import stage

    base = tmp_path_factory.mktemp("reliability")
    listing = make_bad_batch(base / "vids")
    params = write_params(base, {"bad": {"adapter": "csv", "root": str(listing)}}, "bad", **RELIABILITY)
    cfg = load_config(params)
    summaries = {name: stage(name).run(cfg, dataset="bad") for name in ("manifest", "detect", "resample")}
    # The file changes between resample and extract (re-encoded, now 5 frames): extract must record it.
    vanished = base / "vids" / "vanished" / "clip.mp4"
    cut_clip(VIDEOS / "single_face.mp4", vanished, 5)
    summaries["extract"] = stage("extract").run(cfg, dataset="bad")
    return {"base": base, "params": params, "cfg": cfg, "summaries": summaries, "dir": cfg.dataset_dir("bad"),
            "listing": listing}


