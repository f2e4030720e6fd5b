"""The demo dataset: deterministic bytes, apex spans, decodable videos, the adapter, a real detector."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.adapters import make_adapter
from pipeline.demo.generate import APEX_LEVEL, CLASSES, generate_demo, plan_video
from pipeline.errors import DatasetError
from tests.conftest import decode

SMALL = dict(videos_per_class_per_identity=2, n_frames=(20, 26), size=160, n_identities=4)


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(folder: Path) -> list[dict]:
    with (folder / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, seed=0, **SMALL)
    return out


@pytest.mark.slow
def test_same_seed_same_bytes(demo, tmp_path):
    generate_demo(tmp_path / "again", seed=0, **SMALL)
    first, second = _digest(demo), _digest(tmp_path / "again")
    assert len(first) == 48 + 1  # videos + labels.csv
    assert first == second


@pytest.mark.slow
def test_other_seed_other_videos(demo, tmp_path):
    generate_demo(tmp_path / "seed1", seed=1, videos_per_class_per_identity=1, n_frames=(20, 26), size=160,
                  n_identities=4)
    other = _digest(tmp_path / "seed1")
    ours = _digest(demo)
    assert all(other[k] != ours[k] for k in other if k.endswith(".mp4"))


@pytest.mark.slow
def test_labels_and_apex_spans(demo):
    rows = _rows(demo)
    assert list(rows[0]) == ["video", "label", "subject", "apex_start", "apex_end", "episode_start",
                             "episode_end", "n_frames", "group"]
    assert {r["group"] for r in rows} == {""}  # no blends: each person is their own fold key
    assert len(rows) == 48
    assert {r["label"] for r in rows} == set(CLASSES)
    for r in rows:
        n, e0, e1, a0, a1 = (int(r[k]) for k in ("n_frames", "episode_start", "episode_end", "apex_start", "apex_end"))
        assert SMALL["n_frames"][0] <= n <= SMALL["n_frames"][1], r
        # neutral before and after the episode, apex inside it
        assert 0 < e0 < a0 <= a1 < e1 < n - 1, r
        assert r["video"] == f"{r['label']}/{r['subject']}_{r['video'].rsplit('_', 1)[1]}"


@pytest.mark.slow
def test_every_video_decodes_with_the_written_frame_count(demo):
    for r in _rows(demo):
        frames = decode(demo / r["video"])
        assert len(frames) == int(r["n_frames"]), r["video"]
        assert frames[0].shape == (SMALL["size"], SMALL["size"], 3)


@pytest.mark.parametrize("seed", range(20))
def test_plan_apex_is_the_plateau(seed):
    plan = plan_video(np.random.default_rng(seed), (60, 90), 25)
    (e0, e1), (a0, a1) = plan.episode(), plan.apex()
    i = plan.intensity
    assert 60 <= plan.n_frames <= 90
    assert np.all(i[a0:a1 + 1] >= APEX_LEVEL) and i.max() <= 1.0
    assert np.all(i[:e0] == 0) and np.all(i[e1 + 1:] == 0) and e0 > 0 and e1 < plan.n_frames - 1
    assert plan.blink.max() > 0  # blinks happen in every video (a distractor)


@pytest.mark.parametrize("seed", range(40))
def test_sustained_plan_is_held_to_the_end(seed):
    plan = plan_video(np.random.default_rng(seed), (60, 90), 25, "sustained")
    (e0, e1), (a0, a1) = plan.episode(), plan.apex()
    i = plan.intensity
    assert a1 == plan.n_frames - 1 and e1 == plan.n_frames - 1  # held to the last frame
    assert a0 <= round(0.15 * plan.n_frames)  # at the apex within the first 15 %
    assert np.all(i[a0:] >= APEX_LEVEL) and np.all(i[:e0] == 0) and np.all(i[:a0] < APEX_LEVEL)
    assert plan.blink.max() > 0


def test_sustained_flavour_has_both_kinds_of_start():
    starts = [plan_video(np.random.default_rng(s), (60, 90), 25, "sustained").apex()[0] for s in range(40)]
    assert 10 < sum(a == 0 for a in starts) < 30  # about half on from the first frame, the rest come on


def test_transient_plans_are_unchanged_by_the_episode_option():
    a = plan_video(np.random.default_rng(7), (60, 90), 25)
    b = plan_video(np.random.default_rng(7), (60, 90), 25, "transient")
    assert np.array_equal(a.intensity, b.intensity) and np.array_equal(a.motion, b.motion)


def test_sustained_videos_and_labels(tmp_path):
    labels = generate_demo(tmp_path, seed=0, videos_per_class_per_identity=1, n_frames=(20, 24), size=96,
                           classes=("happiness", "surprise"), episode="sustained", n_identities=2)
    rows = list(csv.DictReader(labels.open()))
    assert len(rows) == 4
    for r in rows:
        n = len(decode(tmp_path / r["video"]))
        assert n == int(r["n_frames"]) and int(r["apex_end"]) == n - 1 and int(r["apex_start"]) <= round(0.15 * n)
    with pytest.raises(ValueError, match="episode"):
        generate_demo(tmp_path / "x", episode="held")


def test_plan_refuses_videos_too_short_for_an_episode():
    with pytest.raises(ValueError, match="too short"):
        plan_video(np.random.default_rng(0), (8, 8), 25)


@pytest.mark.slow
def test_expression_changes_the_face_and_returns(demo):
    # mean absolute change of the apex frame vs the first frame is larger than of the neutral frames
    for r in _rows(demo)[::8]:
        frames = np.array(decode(demo / r["video"]), dtype=np.float32)
        a0, e0 = int(r["apex_start"]), int(r["episode_start"])
        at_apex = np.abs(frames[a0] - frames[0]).mean()
        before = np.abs(frames[max(e0 - 1, 0)] - frames[0]).mean()
        assert at_apex > 0.5 and at_apex > before * 0.8, (r["video"], at_apex, before)


@pytest.mark.slow
def test_retinaface_detects_the_face_at_apex(demo):
    from pipeline.tiny_retinaface import detect_faces

    rows = _rows(demo)
    for r in [rows[i] for i in range(0, 48, 7)]:  # a few videos, every identity and several classes
        a0, a1 = int(r["apex_start"]), int(r["apex_end"])
        frame = decode(demo / r["video"])[(a0 + a1) // 2]
        faces = detect_faces(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        assert faces and max(f.score for f in faces) > 0.9, r["video"]


@pytest.mark.slow
def test_adapter_lists_the_demo(demo):
    listing = make_adapter("demo", demo).list_videos()
    assert len(listing.entries) >= 48 and not listing.problems
    assert len({e.subject for e in listing.entries}) >= 4
    assert {e.label for e in listing.entries} == set(CLASSES)
    e = listing.entries[0]
    assert e.video_id == Path(_rows(demo)[0]["video"]).with_suffix("").as_posix()
    assert e.apex_start is not None and e.path.exists() and e.extra["n_frames"] > 0


@pytest.mark.slow
def test_adapter_keeps_only_chosen_classes(demo):
    listing = make_adapter("demo", demo, classes=("happiness", "sadness")).list_videos()
    assert {e.label for e in listing.entries} == {"happiness", "sadness"}
    assert sum(listing.excluded.values()) == 2 * len(listing.entries)  # 4 classes left out, 2 kept


def test_adapter_generates_when_labels_are_missing(tmp_path):
    root = tmp_path / "raw"
    options = {"seed": 3, "videos_per_class_per_identity": 1, "n_frames": [20, 22], "size": 96, "identities": 4,
               "episode": "sustained"}
    listing = make_adapter("demo", root, options=options).list_videos()
    assert (root / "labels.csv").exists() and len(listing.entries) == 24
    assert len({e.subject for e in listing.entries}) == 4
    assert all(e.apex_end == e.extra["n_frames"] - 1 for e in listing.entries)  # sustained: held to the end


def test_adapter_refuses_a_foreign_folder_and_unknown_options(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no labels.csv"):
        make_adapter("demo", tmp_path).list_videos()
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \[.sed.\]"):
        make_adapter("demo", tmp_path / "new", options={"sed": 1}).list_videos()
