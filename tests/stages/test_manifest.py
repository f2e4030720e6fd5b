import pytest

from pipeline.io import read_failures, read_manifest


@pytest.mark.slow
def test_ids_are_relative_paths_and_distinct(face_dataset):
    rows = {r.video_id: r for r in read_manifest(face_dataset["dir"] / "manifest.csv")}
    assert {"sadness/a/clip", "sadness/b/clip", "happiness/single_face", "surprise/face_noface"} <= set(rows)
    assert rows["sadness/a/clip"].n_frames == 24 and rows["sadness/b/clip"].n_frames == 30
    assert rows["happiness/single_face"].label == "happiness"


@pytest.mark.slow
def test_probe_counts_decoded_frames_not_header(face_dataset):
    row = {r.video_id: r for r in read_manifest(face_dataset["dir"] / "manifest.csv")}["neutral/no_face"]
    assert (row.n_frames, row.header_frames) == (95, 98)
    assert (row.width, row.height) == (960, 540)
    hevc = {r.video_id: r for r in read_manifest(face_dataset["dir"] / "manifest.csv")}["surprise/face_noface"]
    assert hevc.n_frames == 169 and abs(hevc.fps - 26.4) < 0.1


@pytest.mark.slow
def test_broken_files_are_listed_with_reason(face_dataset):
    rows = {r.video_id: r for r in read_manifest(face_dataset["dir"] / "manifest.csv")}
    assert rows["neutral/empty"].status == "unreadable" and "zero-byte" in rows["neutral/empty"].error
    assert rows["neutral/notes"].status == "unreadable"
    fails = {(f.video_id, f.stage) for f in read_failures(face_dataset["dir"] / "failures.csv")}
    assert {("neutral/empty", "manifest"), ("neutral/notes", "manifest")} <= fails
    assert face_dataset["summaries"]["manifest"]["ok"] == 6


@pytest.mark.slow
def test_second_run_recomputes_nothing(face_dataset):
    from pipeline.registry import stage

    cfg = face_dataset["cfg"]
    assert stage("manifest").run(cfg, dataset="faces")["skipped"] == "up to date"
    assert stage("detect").run(cfg, dataset="faces")["skipped"] == "up to date"
    assert stage("resample").run(cfg, dataset="faces")["skipped"] == "up to date"


def test_new_and_removed_videos_are_noticed(tmp_path):
    """`dvc repro` runs manifest every time (always_changed); its listing fingerprint decides."""
    import shutil

    from pipeline.config import load_config
    from pipeline.registry import stage
    from tests.conftest import VIDEOS, write_params

    root = tmp_path / "raw"
    (root / "happiness").mkdir(parents=True)
    shutil.copy(VIDEOS / "single_face.mp4", root / "happiness" / "a.mp4")
    cfg = load_config(write_params(tmp_path, {"x": {"adapter": "folder", "root": str(root)}}, "x"))
    assert stage("manifest").run(cfg, dataset="x")["videos"] == 1
    assert stage("manifest").run(cfg, dataset="x")["skipped"] == "up to date"
    shutil.copy(VIDEOS / "single_face.mp4", root / "happiness" / "b.mp4")
    assert stage("manifest").run(cfg, dataset="x")["videos"] == 2
    (root / "happiness" / "a.mp4").unlink()
    assert stage("manifest").run(cfg, dataset="x")["videos"] == 1


def test_unlabelled_videos_are_not_a_class(tmp_path):
    import shutil

    from pipeline.config import load_config
    from pipeline.registry import stage
    from tests.conftest import VIDEOS, write_params

    root = tmp_path / "raw"
    (root / "happiness").mkdir(parents=True)
    shutil.copy(VIDEOS / "single_face.mp4", root / "loose.mp4")  # directly under the root: no label
    shutil.copy(VIDEOS / "single_face.mp4", root / "happiness" / "a.mp4")
    cfg = load_config(write_params(tmp_path, {"x": {"adapter": "folder", "root": str(root)}}, "x"))
    summary = stage("manifest").run(cfg, dataset="x")
    assert summary["labels"] == {"happiness": 1} and summary["unlabelled"] == 1


def test_every_listed_field_reaches_the_manifest_row(tmp_path):
    """VideoEntry → ManifestRow is by field name: a field added to one and not the other fails here."""
    from dataclasses import fields
    from pathlib import Path

    from pipeline.adapters import VideoEntry
    from pipeline.io import ManifestRow
    from stages.manifest import probe_entry

    assert {f.name for f in fields(VideoEntry)} <= {f.name for f in fields(ManifestRow)}
    video = Path(__file__).resolve().parent.parent / "data" / "videos" / "single_face.mp4"
    entry = VideoEntry(video_id="a/b", path=video, label="anger", subject="S1", fold=3, split="test",
                       apex_start=5, apex_end=9, group="F1", extra={"view": 2, "crop": "left"})
    row = probe_entry(entry, 25.0)
    assert (row.video_id, row.path, row.label, row.subject, row.fold, row.split, row.apex_start, row.apex_end,
            row.group) == ("a/b", str(video), "anger", "S1", 3, "test", 5, 9, "F1")
    assert row.crop == "left" and row.extra == '{"view": 2}' and row.ok and row.n_frames > 0


def test_a_manifest_keeps_its_group_and_an_older_one_reads_without(tmp_path):
    """`group` (the fold key of related people) survives the csv; a manifest written before it existed reads
    with group '' (the subject is then the fold key)."""
    import csv

    from pipeline.io import ManifestRow, write_manifest

    path = tmp_path / "manifest.csv"
    write_manifest([ManifestRow(video_id="v", path="v.mp4", label="anger", subject="P1", group="F1")], path)
    [row] = read_manifest(path)
    assert (row.subject, row.group) == ("P1", "F1")
    with path.open(newline="") as f:
        old = [{k: v for k, v in r.items() if k != "group"} for r in csv.DictReader(f)]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(old[0]))
        w.writeheader()
        w.writerows(old)
    [row] = read_manifest(path)
    assert (row.subject, row.group) == ("P1", "")


def test_the_fingerprint_covers_every_listed_field(tmp_path):
    """A relabelled apex span, a new fold group or an adapter field (MMI's crop) re-runs the manifest."""
    import dataclasses

    from pipeline.adapters import VideoEntry
    from pipeline.adapters.base import Listing
    from stages.manifest import fingerprint

    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    entry = VideoEntry(video_id="a", path=video, label="anger", subject="S1", apex_start=5, apex_end=9)
    base = fingerprint(Listing([entry]))
    assert fingerprint(Listing([dataclasses.replace(entry)])) == base
    for change in ({"apex_start": 6}, {"group": "F1"}, {"extra": {"crop": "left"}}, {"subject": "S2"}):
        assert fingerprint(Listing([dataclasses.replace(entry, **change)])) != base, change
