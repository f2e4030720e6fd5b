"""Rich distractors and blended identities of the demo generator (issue 31)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.demo.blend import blend_faces, blend_weights, families
from pipeline.demo.distractors import harsh_optics, harsh_plan, rich_plan
from pipeline.demo.generate import generate_demo, load_models
from pipeline.detector import RetinaFaceDetector
from tests.conftest import decode
from tests.demo.test_generate import _rows

SMALL = dict(videos_per_class_per_identity=1, n_frames=(40, 44), size=160, n_identities=2)


@pytest.fixture(scope="module")
def rich(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rich")
    generate_demo(out, seed=0, distractors="rich", blends=1, **SMALL)
    return out


def test_blends_are_their_own_people_in_their_parents_group(rich):
    rows = _rows(rich)
    people = {r["video"].split("/")[1].rsplit("_", 1)[0] for r in rows}
    assert people == {"astronaut", "pyfeat", "astronaut-pyfeat-1"}
    assert {r["subject"] for r in rows} == people  # subject_norm normalises each person, a blend included
    assert {r["group"] for r in rows} == {"astronaut-pyfeat"}  # the fold key keeps the family together
    assert len(rows) == 3 * 6


def test_parents_false_keeps_only_the_blends_in_their_family(tmp_path):
    """A held-out set of people: the morphs alone, still grouped by family for the folds."""
    generate_demo(tmp_path, seed=0, blends=1, parents=False, **SMALL)
    rows = _rows(tmp_path)
    assert {r["subject"] for r in rows} == {"astronaut-pyfeat-1"} and {r["group"] for r in rows} == {"astronaut-pyfeat"}
    assert len(rows) == 6
    with pytest.raises(ValueError, match="blends >= 1"):
        generate_demo(tmp_path / "none", seed=0, parents=False, **SMALL)


def test_the_demo_stamp_names_parents_only_when_off(tmp_path):
    """Sets made before the option existed stay current: their stamp has no `parents` key."""
    from pipeline.adapters import make_adapter
    from pipeline.errors import DatasetError

    options = dict(seed=0, identities=4, blends=2)
    assert "parents" not in make_adapter("demo", tmp_path, options=options).settings()
    new = make_adapter("demo", tmp_path, options={**options, "parents": False})
    assert new.settings()["parents"] is False and new.size() == (4 * 6 * 2, 4)  # 2 pairs x 2 blends
    with pytest.raises(DatasetError, match="true or false"):
        make_adapter("demo", tmp_path, options={**options, "parents": "no"}).settings()
    with pytest.raises(DatasetError, match="blends >= 1"):  # checked before anything is written
        make_adapter("demo", tmp_path / "none", options={"identities": 2, "parents": False}).list_videos()
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").rglob("*.mp4"))


@pytest.mark.slow  # generates the rich demo set a second time (4 s)
def test_rich_videos_decode_and_are_deterministic(rich, tmp_path):
    for r in _rows(rich):
        assert len(decode(rich / r["video"])) == int(r["n_frames"])
    generate_demo(tmp_path, seed=0, distractors="rich", blends=1, **SMALL)
    for r in _rows(rich)[:4]:
        assert (tmp_path / r["video"]).read_bytes() == (rich / r["video"]).read_bytes()


def test_rich_distractors_leave_the_plan_and_change_thedecode(rich, tmp_path):
    generate_demo(tmp_path, seed=0, **SMALL)
    basic = {r["video"]: r for r in _rows(tmp_path)}
    for r in _rows(rich):
        if r["video"] in basic:  # same episode and apex: the distractors have their own random stream
            assert {k: r[k] for k in r if k != "group"} == {k: v for k, v in basic[r["video"]].items() if k != "group"}
            a, b = decode(rich / r["video"]), decode(tmp_path / r["video"])
            assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() > 3


def test_rich_plan_has_speech_pose_and_camera_variety():
    plans = [rich_plan(np.random.default_rng(i), 80, 25.0) for i in range(40)]
    assert sum(p.speech.max() > 0.2 for p in plans) >= 10
    assert sum(p.occluder is not None for p in plans) >= 5
    assert {p.jpeg_quality for p in plans} >= {0, 40}
    assert max(np.abs(p.pose).max() for p in plans) > 10
    for p in plans:
        assert 0 <= p.speech.min() and p.speech.max() <= 1


def test_harsh_adds_to_rich_from_its_own_stream(rich, tmp_path):
    """Same episodes as rich (a third random stream); frames held by the slower camera, and the face still found."""
    generate_demo(tmp_path, seed=0, distractors="harsh", blends=1, **SMALL)
    assert _rows(tmp_path) == _rows(rich)
    held = 0
    for r in _rows(tmp_path)[:6]:
        a, b = np.asarray(decode(tmp_path / r["video"])), np.asarray(decode(rich / r["video"]))
        assert len(a) == int(r["n_frames"]) and np.abs(a.astype(int) - b.astype(int)).mean() > 2
        step = np.abs(np.diff(a.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
        held += int((step < 1.0).sum())  # a repeated frame differs only by the encoder's rounding
        assert RetinaFaceDetector(threshold=0.5).detect([cv2.cvtColor(a[len(a) // 2], cv2.COLOR_BGR2RGB)])[0] is not None
    assert held > 10


def test_harsh_optics_shade_blur_and_tone():
    plans = [harsh_plan(np.random.default_rng(i), 60, 25.0) for i in range(40)]
    assert {p.hold for p in plans} == {1, 2, 3} and {p.blur for p in plans} == {1, 3, 5, 7}
    assert all(-1 <= p.shadow.min() and p.shadow.max() <= 1 for p in plans)
    ramp = np.linspace(-1, 1, 64, dtype=np.float32)
    flat = np.full((64, 64, 3), 128.0, np.float32)
    plan = next(p for p in plans if p.blur > 1)
    out = harsh_optics(flat, plan, 0, ramp[None, :], ramp[:, None])
    assert out.shape == flat.shape and out.min() >= 0 and out.max() <= 255
    assert out.max() - out.min() > 20  # the shadow's edge crosses a flat grey frame


def test_blended_face_is_a_face_between_its_parents():
    (a,), (b,) = (m[:1] for m in load_models(n_identities=2))
    blend = blend_faces(a.image, a.frame.landmarks, b.image, b.frame.landmarks, 0.5)
    assert blend.shape == a.image.shape and blend.dtype == np.uint8
    found = RetinaFaceDetector(threshold=0.5).detect([cv2.cvtColor(blend, cv2.COLOR_BGR2RGB)])[0]
    assert len(found.scores) >= 1
    diff = lambda x, y: float(np.abs(x.astype(int) - y.astype(int)).mean())  # noqa: E731
    assert diff(blend, a.image) > 1 and diff(blend, b.image) > 1
    with pytest.raises(ValueError, match="strictly between"):
        blend_faces(a.image, a.frame.landmarks, b.image, b.frame.landmarks, 1.0)


def test_families_and_weights():
    assert families(("a", "b", "c")) == [("a", "b"), ("c",)]
    assert blend_weights(1) == [0.5]
    assert blend_weights(2) == pytest.approx([1 / 3, 2 / 3])


def test_neutralise_lowers_the_mouth_corners_and_zero_is_the_photo():
    from pipeline.demo.assets import FACES_DIR
    from pipeline.demo.face import detect_landmarks, neutralise

    photo = cv2.imread(str(FACES_DIR / "group_2.jpg"))
    assert neutralise(photo, 0.0) is photo
    before, after = detect_landmarks(photo), detect_landmarks(neutralise(photo, 1.0))
    eye_y = lambda lm: lm[:2, 1].mean()  # noqa: E731
    corners = lambda lm: lm[3:, 1].mean() - eye_y(lm)  # noqa: E731
    assert corners(after) > corners(before) + 1.0  # corners moved down relative to the eyes
    width = lambda lm: np.hypot(*(lm[4] - lm[3]))  # noqa: E731
    assert width(after) < width(before)  # and in: the smile's stretch is undone


@pytest.mark.slow  # generates a small blended set through the adapter (4 s)
def test_the_demo_adapter_lists_each_person_with_the_family_as_group(tmp_path):
    from pipeline.adapters import make_adapter

    options = dict(seed=0, videos_per_class_per_identity=1, n_frames=[40, 44], size=160, identities=2, blends=1)
    adapter = make_adapter("demo", tmp_path / "raw", options=options)
    listing = adapter.list_videos()
    assert adapter.size() == (len(listing.entries), 3)  # what the demo announces before generating
    family = "astronaut-pyfeat"
    assert {(e.subject, e.group) for e in listing.entries} == {
        ("astronaut", family), ("pyfeat", family), ("astronaut-pyfeat-1", family)}


def test_weak_strength_changes_the_apex_strength_only():
    """`strength` (bench sources `:weak`) draws the same plan with another apex strength, so a weak set is its
    full-strength twin with subtler expressions, fold for fold."""
    from pipeline.demo.generate import STRENGTH, WEAK, plan_video

    for seed in range(5):
        full = plan_video(np.random.default_rng(seed), (60, 90), 25)
        weak = plan_video(np.random.default_rng(seed), (60, 90), 25, strength=WEAK)
        assert np.array_equal(full.intensity, weak.intensity) and np.array_equal(full.motion, weak.motion)
        assert STRENGTH[0] <= full.amplitude <= STRENGTH[1] and WEAK[0] <= weak.amplitude <= WEAK[1]
        # the same uniform draw mapped onto each range
        u = (full.amplitude - STRENGTH[0]) / (STRENGTH[1] - STRENGTH[0])
        assert weak.amplitude == pytest.approx(WEAK[0] + u * (WEAK[1] - WEAK[0]))


def test_the_demo_stamp_names_strength_only_when_not_the_default(tmp_path):
    from pipeline.adapters import make_adapter
    from pipeline.demo.generate import STRENGTH
    from pipeline.errors import DatasetError

    assert "strength" not in make_adapter("demo", tmp_path, options={"strength": list(STRENGTH)}).settings()
    assert make_adapter("demo", tmp_path, options={"strength": [0.4, 0.8]}).settings()["strength"] == [0.4, 0.8]
    with pytest.raises(DatasetError, match=r"\[min, max\]"):
        make_adapter("demo", tmp_path, options={"strength": 0.5}).settings()
    with pytest.raises(DatasetError, match="0 < min <= max"):  # checked before anything is written
        make_adapter("demo", tmp_path / "bad", options={"identities": 2, "strength": [0.8, 0.4]}).list_videos()
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").rglob("*.mp4"))
