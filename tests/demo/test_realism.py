"""The realism check: summarising readings, reading labels.csv, a tiny generated set end to end, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.demo.generate import CLASSES, generate_demo
from pipeline.demo.realism import (EXPRESSIONS, LabelRow, VideoReading, check_images, check_videos, format_images,
                                   interleave, main, read_labels, spread, summarise)
from pipeline.errors import DatasetError
from tests.conftest import VIDEOS, decode


def _probs(top: int, p: float = 0.6) -> tuple[float, ...]:
    out = np.full(7, (1 - p) / 6)
    out[top] = p
    return tuple(out)


def test_summarise_counts_both_readings():
    happy_face = _probs(3, 0.5)  # a subject whose rest face reads happy
    anger_rise = (np.array(happy_face) + 0.2 * np.eye(7)[0]) / 1.2  # still reads happy, but anger rose
    videos = [
        VideoReading("a.mp4", "anger", "s1", tuple(anger_rise), happy_face, 8, 8),  # 6-way wrong, corrected right
        VideoReading("b.mp4", "happiness", "s1", _probs(3, 0.9), happy_face, 8, 8),
        VideoReading("c.mp4", "sadness", "s2", _probs(4), None, 8, 0),  # no neutral frames: 6-way only
    ]
    r = summarise(videos, [])
    by = {c.label: c for c in r.per_class}
    assert [c.label for c in r.per_class] == list(EXPRESSIONS) == list(CLASSES)
    assert by["anger"].six_way == 0.0 and by["anger"].corrected == 1.0
    assert by["sadness"].six_way == 1.0 and by["sadness"].n_corrected == 0 and by["sadness"].corrected is None
    assert by["fear"].n == 0 and by["fear"].six_way is None
    assert r.six_way == pytest.approx(2 / 3) and r.n_corrected == 2
    assert r.confusion[0][3] == 1 and np.sum(r.confusion) == 3 and np.sum(r.confusion_corrected) == 2
    assert r.flagged == ["s1"]  # s2 has no neutral frames: not judged
    s2 = [s for s in r.subjects if s.subject == "s2"][0]
    assert s2.probs is None and not s2.flagged
    text = r.format()
    assert "FLAGGED" in text and "s1: happiness" in text and "confusion" in text
    assert "confusion" not in r.format(short=True) and "s1: happiness" in r.format(short=True)
    assert r.per_subject() == {"s1": {"anger": (0, 1), "happiness": (1, 1)}, "s2": {"sadness": (1, 1)}}
    assert "s1            0/1     -     -   1/1     -     -" in text and "per subject" not in r.format(short=True)
    assert json.loads(r.to_json())["flagged"] == ["s1"]
    sustained = summarise(videos[2:], [])  # apex from frame 0: nothing to correct against
    assert sustained.corrected is None and "no video has neutral frames" in sustained.format(short=True)


def test_labels_problems_are_reported_at_once(tmp_path):
    with pytest.raises(DatasetError, match="labels.csv not found"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("video,label,subject,apex_start,apex_end\n"
                                         "a.mp4,joy,s,1,2\nb.mp4,anger,s,x,2\nc.mp4,anger,s,5,2\n")
    with pytest.raises(DatasetError) as err:
        read_labels(tmp_path)
    assert "'joy'" in str(err.value) and "apex_start must be an integer" in str(err.value) and "5..2" in str(err.value)
    (tmp_path / "labels.csv").write_text("video,label\na.mp4,anger\n")
    with pytest.raises(DatasetError, match="lacks columns"):
        read_labels(tmp_path)


def test_neutral_frames_spread_and_interleave():
    row = LabelRow("v", "anger", "s", (10, 12), (5, 20), 25)
    assert row.neutral_frames() == [0, 1, 2, 3, 4, 21, 22, 23, 24]
    assert LabelRow("v", "anger", "s", (0, 9), None, 10).neutral_frames() == []
    assert spread(range(10, 13), 8) == [10, 11, 12]
    assert spread(list(range(100)), 3) == [0, 50, 99]
    rows = [LabelRow(f"{c}{s}{k}", c, s, (0, 0), None, 1) for s in "ab" for c in EXPRESSIONS for k in range(2)]
    first = interleave(rows)[:12]
    assert [r.label for r in first[:6]] == list(EXPRESSIONS) and {r.subject for r in first[6:]} == {"b"}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("realism")
    generate_demo(out, videos_per_class_per_identity=1, n_identities=2, n_frames=(30, 34), size=160)
    return out


def test_check_videos_on_a_tiny_generated_set(tiny_set):
    r = check_videos(tiny_set)
    assert r.n_videos == 12 and not r.failures and r.n_corrected == 12
    assert [c.label for c in r.per_class] == list(EXPRESSIONS) and all(c.n == 2 for c in r.per_class)
    numbers = [r.six_way, r.corrected] + [v for c in r.per_class for v in (c.six_way, c.corrected)]
    assert all(0 <= v <= 1 for v in numbers)
    assert all(v.n_apex >= 1 and v.n_neutral >= 1 and abs(sum(v.apex_probs) - 1) < 1e-4 for v in r.videos)
    assert len(r.subjects) == 2 and all(len(s.probs) == 7 for s in r.subjects)


def test_cli(tiny_set, tmp_path, capsys):
    assert main([str(tiny_set), "--max-videos", "6", "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "6-way apex" in out and "baseline-corrected" in out
    assert json.loads((tmp_path / "r.json").read_text())["n_videos"] == 6
    assert main([str(tmp_path / "nowhere")]) == DatasetError.exit_code
    assert "labels.csv not found" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "pipeline.demo.realism", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--max-videos" in done.stdout


def test_check_images_reads_a_real_smile():
    frames = decode(VIDEOS / "single_face.mp4", 40)
    blank = np.zeros((120, 90, 3), np.uint8)
    readings = check_images([frames[3], frames[39], blank], ["neutral", "happiness", "nothing"])
    assert [r.reads for r in readings] == ["neutral", "happiness", None]
    assert readings[1].six_way == "happiness" and "(no face)" in format_images(readings)
    with pytest.raises(ValueError, match="2 labels"):
        check_images([blank], ["a", "b"])
