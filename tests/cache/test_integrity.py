"""Issue 16: a damaged cache is caught by its row checksums, refused by training, repaired by extract."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cache.reader import load_cache
from cache.store import list_shards
from cache.integrity import check_shard
from cache.store import CHECKSUM
from pipeline.cli import main
from pipeline.errors import PipelineError
from tests.conftest import EXTRACTED, copy_dataset
from tests.head.conftest import tiny_params, write_synthetic_dataset


def damage_row(shard, row: int, xor: int, n_bytes: int = 64) -> None:
    """XOR `n_bytes` bytes inside row `row`'s chunk of `features` on disk, as a bad sector would."""
    with h5py.File(shard, "r") as f:
        offset = f["features"].id.get_chunk_info(row).byte_offset
    with open(shard, "r+b") as fh:
        fh.seek(offset + 1000)
        data = bytearray(fh.read(n_bytes))
        fh.seek(offset + 1000)
        fh.write(bytes(b ^ xor for b in data))


@pytest.fixture()
def synth(tmp_path):
    params = tiny_params(tmp_path)
    info = write_synthetic_dataset(tmp_path / "data", n_videos=12, n_subjects=6, dim=16)
    return params, info["folder"]


def test_a_finite_bit_flip_is_caught_by_verify_and_refused_by_training(synth):
    """XOR 0x01 keeps every value finite: before checksums `cache verify` said `cache OK`."""
    params, folder = synth
    shard = list_shards(folder / "features")[0]
    damage_row(shard, 2, 0x01)
    with h5py.File(shard, "r") as f:
        assert np.isfinite(f["features"][2].astype(np.float32)).all()  # the old check cannot see it
    assert check_shard(shard).damaged == [2]
    runner = CliRunner()
    res = runner.invoke(main, ["cache", "verify", "--params", str(params)])
    assert res.exit_code == 1 and "shard-00000.h5" in res.output and "checksum" in res.output, res.output
    res = runner.invoke(main, ["run", "train-head", "--no-deps", "--params", str(params)])
    assert res.exit_code == 1, res.output
    assert "shard-00000.h5" in res.output and "`pipeline run extract --dataset synth`" in res.output
    assert "Traceback" not in res.output


def test_a_shard_from_before_checksums_gets_a_re_extract_message(synth):
    params, folder = synth
    shard = list_shards(folder / "features")[1]
    with h5py.File(shard, "r+") as f:  # what format 1 wrote
        del f[CHECKSUM]
    with pytest.raises(PipelineError, match=r"shard-00001.h5 was written before shards carried checksums.*"
                                             r"pipeline run extract --dataset synth"):
        load_cache(folder / "features")
    res = CliRunner().invoke(main, ["cache", "verify", "--params", str(params)])
    assert res.exit_code == 1 and "before shards carried checksums" in res.output


def test_cache_verify_without_a_manifest_fails(synth):
    """Issue 16 item 7: with manifest.csv gone, verify said `manifest_videos: 0 … cache OK`."""
    params, folder = synth
    before = CliRunner().invoke(main, ["cache", "verify", "--params", str(params)])
    assert "manifest.csv not found" not in before.output, before.output  # (synthetic shards lack provenance)
    (folder / "manifest.csv").unlink()
    res = CliRunner().invoke(main, ["cache", "verify", "--params", str(params)])
    assert res.exit_code == 1 and "manifest.csv not found" in res.output, res.output


@pytest.mark.slow
def test_extract_resume_repairs_only_the_damaged_video(face_dataset, tmp_path):
    """The rerun's fast path verifies checksums; it re-extracts the damaged row alone, to the same values."""
    from pipeline.config import load_config
    from pipeline.registry import stage

    copy_dataset(face_dataset["dir"], tmp_path, without=EXTRACTED)
    cfg = load_config(face_dataset["params"], data_root=str(tmp_path), overrides=["extract.backbone=retinaface_mnet"])
    first = stage("extract").run(cfg, dataset="faces")
    assert first["computed"] == 5
    clean = load_cache(tmp_path / "faces" / "features")
    assert "skipped" in stage("extract").run(cfg, dataset="faces")  # intact: still the fast path
    shard = list_shards(tmp_path / "faces" / "features")[1]
    with h5py.File(shard, "r") as f:
        victim = f["video_id"][0].decode()
    damage_row(shard, 0, 0x5A)
    again = stage("extract").run(cfg, dataset="faces")
    assert (again.get("repaired"), again["computed"], again["resumed"]) == (1, 1, 4), again
    fixed = load_cache(tmp_path / "faces" / "features")
    assert sorted(fixed.video_id) == sorted(clean.video_id)
    for v in clean.video_id:
        np.testing.assert_array_equal(fixed.features[fixed.video_id.index(v)], clean.features[clean.video_id.index(v)])
    assert victim in fixed.video_id


def test_the_lazy_dataset_refuses_a_damaged_row(synth):
    from cache.reader import FeatureDataset

    _, folder = synth
    ds = FeatureDataset(folder / "features")
    ds[2]  # intact
    damage_row(list_shards(folder / "features")[0], 2, 0x01)
    ds = FeatureDataset(folder / "features")
    ds[1]  # the other rows still read
    with pytest.raises(PipelineError, match="fail their checksum.*pipeline run extract --dataset synth"):
        ds[2]
