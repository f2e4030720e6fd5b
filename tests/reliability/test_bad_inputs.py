"""Bad and awkward inputs in one batch: each broken video is one clear failures.csv row, every good
video of the same batch is cached (issue 7)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from cache.reader import load_cache
from pipeline.io import read_failures, read_manifest
from stages.detect import read_track
from tests.reliability.conftest import EXPECTED_FAILURES, GOOD, VFR_PTS_MS

pytestmark = pytest.mark.slow  # end to end: every test reads a fixture that runs the stages


def _failures(batch) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in read_failures(batch["dir"] / "failures.csv"):
        out.setdefault(f.video_id, []).append(f)
    return out


def _manifest(batch) -> dict:
    return {r.video_id: r for r in read_manifest(batch["dir"] / "manifest.csv")}


@pytest.mark.parametrize("video_id", sorted(EXPECTED_FAILURES))
def test_each_broken_input_is_one_clear_record(bad_batch, video_id):
    stage, kind, word = EXPECTED_FAILURES[video_id]
    rows = _failures(bad_batch)[video_id]
    assert len(rows) == 1, rows  # one record, at the stage where it broke, not repeated downstream
    assert (rows[0].stage, rows[0].kind) == (stage, kind)
    assert word in rows[0].message


def test_every_good_video_of_the_batch_is_cached(bad_batch):
    cache = load_cache(bad_batch["dir"] / "features")
    assert sorted(cache.video_id) == sorted(GOOD)
    from pipeline.motion import motion_dim

    assert cache.features.shape == (len(GOOD), 105, 384 + motion_dim(bad_batch["cfg"].extract.motion))
    assert np.isfinite(cache.features.astype(np.float32)).all()
    # No video cached twice, and nothing else recorded as failed.
    assert len(set(cache.video_id)) == len(cache.video_id)
    assert set(_failures(bad_batch)) == set(EXPECTED_FAILURES)
    s = bad_batch["summaries"]
    assert (s["detect"]["tracked"], s["extract"]["cached"], s["extract"]["failed"]) == (len(GOOD) + 1, len(GOOD), 1)


def test_manifest_counts_what_decodes(bad_batch):
    m = _manifest(bad_batch)
    assert m["one/frame"].n_frames == 1
    # 60 % of a file whose index comes first: the header promises 24, 5 decode; the rest is what counts.
    assert (m["truncated_faststart/clip"].n_frames, m["truncated_faststart/clip"].header_frames) == (5, 24)
    assert (m["huge/clip"].width, m["huge/clip"].height, m["huge/clip"].n_frames) == (4000, 4000, 3)
    assert (m["gray_frames"].n_frames, m["gray/clip"].n_frames) == (12, 24)
    # Variable frame rate: every frame counted; fps is the average (24 frames over 1.58 s), not 100.
    vfr = m["vfr/clip"]
    assert vfr.n_frames == len(VFR_PTS_MS)
    assert abs(vfr.fps - len(VFR_PTS_MS) / ((VFR_PTS_MS[-1] + 10) / 1000)) < 1.0
    assert "vidéo été/clip ü" in m and m["vidéo été/clip ü"].path.endswith("clip ü.mp4")


def test_rotation_metadata_is_applied_before_detection(bad_batch):
    """Frames stored sideways with a display rotation: OpenCV reports it and decodes upright frames."""
    import cv2

    from pipeline.video import iter_frames
    from tests.reliability.media import real_frames

    row = _manifest(bad_batch)["rotated/clip"]
    assert row.rotation in (90, 270)
    assert (row.width, row.height) == (640, 360)  # stored 360x640, displayed landscape
    first = next(iter_frames(bad_batch["base"] / "vids" / "rotated" / "clip.mp4"))
    upright = cv2.cvtColor(real_frames(1)[0], cv2.COLOR_BGR2RGB)
    assert first.shape == upright.shape and np.abs(first.astype(int) - upright).mean() < 12
    with h5py.File(bad_batch["dir"] / "faces.h5", "r") as f:
        rot, ref = read_track(f, "rotated/clip"), read_track(f, "good/clip")
    # Same face, same place as in the unrotated clip; eyes level (an upright face).
    assert np.abs(rot.boxes - ref.boxes).max() < 12
    eyes = rot.landmarks[:, :2]
    assert (np.abs(eyes[:, 0, 1] - eyes[:, 1, 1]) < 0.2 * np.abs(eyes[:, 0, 0] - eyes[:, 1, 0])).all()


def test_awkward_videos_get_faces_and_frames(bad_batch):
    with h5py.File(bad_batch["dir"] / "faces.h5", "r") as f, h5py.File(bad_batch["dir"] / "frames.h5", "r") as fr:
        for vid in GOOD:
            g = f[vid]
            assert (g["flags"][:] == 1).any(), vid
            idx = fr[vid]["frame_index"][:]
            assert idx.shape == (105,) and 0 <= idx.min() and idx.max() < g.attrs["n_frames"], vid
        assert (fr["one/frame/frame_index"][:] == 0).all()  # one frame, repeated
        assert f["huge/clip"].attrs["width"] == 4000
        big = f["huge/clip/boxes"][:]
        assert (big[:, 2] - big[:, 0] > 400).all()  # a 4x face found in the 4000x4000 frame
        grey = f["gray/clip/boxes"][:]
        assert np.abs(grey - f["good/clip/boxes"][:]).max() < 12  # colour does not matter


def test_cache_verify_accepts_the_batch(bad_batch):
    from click.testing import CliRunner

    from pipeline.cli import main

    res = CliRunner().invoke(main, ["cache", "verify", "--params", str(bad_batch["params"])])
    assert res.exit_code == 0, res.output
    # 15 manifest ids = 9 cached + 6 failed; the duplicate row's failure names an id that is cached
    # (its first row), so it is not a lost video.
    assert '"videos": 9' in res.output and '"failed_videos": 6' in res.output
