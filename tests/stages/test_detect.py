import dataclasses
import shutil

import h5py
import numpy as np
import pytest

from pipeline.io import read_failures
from stages.detect import read_track

pytestmark = pytest.mark.slow  # end to end: every test reads a fixture that runs the stages


def _track(face_dataset, vid):
    with h5py.File(face_dataset["dir"] / "faces.h5", "r") as f:
        return read_track(f, vid), dict(f[vid].attrs)


def test_single_face_is_one_continuous_track(face_dataset):
    tr, attrs = _track(face_dataset, "happiness/single_face")
    assert attrs["n_frames"] == 72 and tr.boxes.shape == (72, 4) and tr.landmarks.shape == (72, 5, 2)
    assert (tr.flags == 1).mean() >= 0.95
    assert (tr.flags != 0).all()  # one continuous track, no hole
    assert tr.scores.dtype == np.float32 and tr.flags.dtype == np.uint8


def test_face_disappears_at_the_cut(face_dataset):
    tr, _ = _track(face_dataset, "surprise/face_noface")
    first, last = tr.span()
    assert first == 0 and abs(last - 71) <= 3
    assert (tr.flags[last + 1:] == 0).all()


def test_track_never_hops_to_another_person(face_dataset):
    tr, _ = _track(face_dataset, "happiness/video_01")
    present = tr.flags != 0
    assert present.mean() > 0.9
    centre = (tr.boxes[present, :2] + tr.boxes[present, 2:]) / 2
    size = (tr.boxes[present, 2:] - tr.boxes[present, :2]).max(1)
    # The woman on the left (x < 200 in a 640-wide frame) for the whole clip, moving smoothly.
    assert (centre[:, 0] < 200).all()
    assert (np.linalg.norm(np.diff(centre, axis=0), axis=1) < 0.5 * size[1:]).all()


def test_no_face_is_recorded_and_batch_goes_on(face_dataset):
    fails = {f.video_id: f for f in read_failures(face_dataset["dir"] / "failures.csv") if f.stage == "detect"}
    assert fails["neutral/no_face"].kind == "no_face"
    s = face_dataset["summaries"]["detect"]
    assert s["tracked"] == 5 and s["videos"] == 8
    assert (face_dataset["dir"] / "qc" / "detect_contact_sheet.png").stat().st_size > 10_000


def _private_copy(face_dataset, tmp_path):
    """The fixture's dataset folder copied under tmp_path, and a config pointing at it: the shared fixture
    stays as the other tests expect it."""
    cfg = dataclasses.replace(face_dataset["cfg"], data_root=tmp_path / "data")
    shutil.copytree(face_dataset["dir"], cfg.dataset_dir("faces"))
    return cfg, cfg.dataset_dir("faces")


def _tracks(path):
    with h5py.File(path, "r") as f:
        ids = []
        f.visit(lambda name: ids.append(name) if isinstance(f[name], h5py.Group) and "boxes" in f[name] else None)
        return {vid: read_track(f, vid) for vid in ids}


def _assert_same_tracks(a, b):
    assert a.keys() == b.keys()
    for vid in a:
        np.testing.assert_array_equal(a[vid].boxes, b[vid].boxes)
        np.testing.assert_array_equal(a[vid].flags, b[vid].flags)


def test_resume_reuses_verified_parts(face_dataset, tmp_path):
    from pipeline.registry import stage

    cfg, folder = _private_copy(face_dataset, tmp_path)
    # Same parameters, new output file: every video comes from its verified part, none is detected again.
    (folder / ".state" / "detect.json").unlink()
    s = stage("detect").run(cfg, dataset="faces")
    assert s["detected_now"] == 0 and s["resumed"] == 6
    _assert_same_tracks(_tracks(folder / "faces.h5"), _tracks(face_dataset["dir"] / "faces.h5"))


def test_shards_write_parts_and_a_plain_run_assembles_them(face_dataset, tmp_path):
    from pipeline.io import read_manifest
    from pipeline.registry import stage
    from stages import detect

    cfg, folder = _private_copy(face_dataset, tmp_path)
    (folder / ".state" / "detect.json").unlink()
    (folder / "faces.h5").unlink()
    ok = [r.video_id for r in read_manifest(folder / "manifest.csv") if r.ok]
    redo = ["sadness/a/clip", "sadness/b/clip", "neutral/no_face"]  # short clips and a failure, detected again
    for vid in redo:
        detect.part_path(folder / ".detect-parts", vid).unlink()
    for k in range(2):
        s = stage("detect").run(cfg, dataset="faces", shard=(k, 2))
        mine = ok[k::2]
        assert s["videos"] == len(mine) and s["detected_now"] == len([v for v in redo if v in mine])
        assert not (folder / "faces.h5").exists() and not (folder / ".state" / "detect.json").exists()
    s = stage("detect").run(cfg, dataset="faces")  # the merge: nothing left to detect
    assert s["detected_now"] == 0 and s["resumed"] == 6 and s["tracked"] == 5
    with h5py.File(folder / "faces.h5", "r") as f:  # the detector the parts were made with (issue 29)
        assert f.attrs["detector"].startswith("RetinaFace-MobileNet0.25"), f.attrs["detector"]
    _assert_same_tracks(_tracks(folder / "faces.h5"), _tracks(face_dataset["dir"] / "faces.h5"))
    fails = {f.video_id: f.kind for f in read_failures(folder / "failures.csv") if f.stage == "detect"}
    assert fails["neutral/no_face"] == "no_face"  # a slice's failure reaches failures.csv through its part


def test_force_recomputes_every_video_parts_included(face_dataset, monkeypatch):
    """`--force` means recompute: no video comes from its part (the detector itself is replaced by the
    stored results here, to count the calls without paying for detection again)."""
    import json

    from pipeline.registry import stage
    from stages import detect

    cfg, folder = face_dataset["cfg"], face_dataset["dir"]
    sig = json.loads((folder / ".state" / "detect.json").read_text())["signature"]
    calls = []

    def stored(row, dcfg):
        calls.append(row.video_id)
        return detect.load_part(detect.part_path(folder / ".detect-parts", row.video_id), row.video_id, sig)

    monkeypatch.setattr(detect, "detect_video", stored)
    before = (folder / "faces.h5").read_bytes()
    s = stage("detect").run(cfg, dataset="faces", force=True)
    assert s["detected_now"] == 6 and s["resumed"] == 0 and len(calls) == 6
    assert "resumed" not in s["detector"]
    (folder / "faces.h5").write_bytes(before)


def test_stride_interpolates_between_detections(face_dataset, tmp_path):
    from pipeline.config import DetectConfig
    from pipeline.io import read_manifest
    from pipeline.facetrack import detect_video

    row = {r.video_id: r for r in read_manifest(face_dataset["dir"] / "manifest.csv")}["happiness/single_face"]
    res = detect_video(row, DetectConfig(det_size=480, stride=3))
    assert set(np.unique(res.track.flags[:70])) == {1, 2}
    assert (res.track.flags[::3][:23] == 1).all()
