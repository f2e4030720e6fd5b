"""int8 CPU path (pipeline/backbones/int8.py): quantized graphs, fidelity to fp32, the cache, the shard record."""
import h5py
import numpy as np
import pytest

from cache.store import list_shards
from pipeline.config import ExtractConfig, load_config
from tests.conftest import EXTRACTED, copy_dataset


def test_int8_is_refused_where_it_is_not_built():
    problems = ExtractConfig(backbone="timm:resnet18", weights="random", precision="int8").check("extract")
    assert any("int8" in p and "timm:resnet18" in p for p in problems)
    assert ExtractConfig(backbone="retinaface_mnet", precision="int8").check("extract") == []
    assert any("precision" in p for p in ExtractConfig(precision="int4").check("extract"))


def test_calibration_crops_are_the_shipped_faces_aligned():
    from pipeline.backbones.int8 import calibration_crops

    crops = calibration_crops(112, 0.0)
    assert crops.shape == (32, 112, 112, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[1], crops[0][:, ::-1])  # each photo, then its mirror
    assert crops.std() > 20  # real images, not blank


@pytest.mark.slow
@pytest.mark.parametrize("backbone,weights,min_cos", [("resnet18", "random", 0.999), ("retinaface_mnet", "imagenet", 0.95)])
def test_int8_features_follow_fp32_and_the_graph_is_cached(backbone, weights, min_cos, tmp_path, monkeypatch):
    from pipeline.backbones import int8
    from pipeline.features import build_extractor

    monkeypatch.setenv("CEFLNET_CACHE", str(tmp_path))
    fe = build_extractor(ExtractConfig(backbone=backbone, weights=weights, precision="int8", device="cpu", threads=1))
    assert fe.provenance()["precision"] == "int8" and "calibration" in fe.provenance()["int8"]
    rng = np.random.default_rng(0)
    crops = int8.calibration_crops(224, 0.0)[rng.permutation(32)[:8]]
    crops = np.clip(crops.astype(np.int16) + rng.integers(-12, 13, crops.shape), 0, 255).astype(np.uint8)
    feats = fe(crops)
    fid = fe.fidelity(crops, feats)
    assert fid["frames"] == 8 and fid["cos_min"] >= min_cos and fid["cos_mean"] >= fid["cos_min"]
    assert not np.allclose(feats, fe(crops, fe.reference))  # really another network: int8, not the fp32 one
    cached = list(tmp_path.rglob("*.onnx"))
    assert len(cached) == 1
    again = build_extractor(ExtractConfig(backbone=backbone, weights=weights, precision="int8", device="cpu", threads=1))
    np.testing.assert_array_equal(again(crops), feats)  # the cached graph gives the same features
    assert list(tmp_path.rglob("*.onnx")) == cached


@pytest.mark.slow
def test_extract_int8_records_fidelity_per_shard(face_dataset, tmp_path, monkeypatch):
    from pipeline.registry import stage

    monkeypatch.setenv("CEFLNET_CACHE", str(tmp_path / "int8"))
    cfg = load_config(face_dataset["params"], data_root=str(tmp_path),
                      overrides=["extract.backbone=retinaface_mnet", "extract.precision=int8"])
    copy_dataset(face_dataset["dir"], tmp_path, without=EXTRACTED)
    summary = stage("extract").run(cfg, dataset="faces")
    assert summary["precision"] == "int8" and summary["failed"] == 0
    for s in list_shards(tmp_path / "faces" / "features"):
        with h5py.File(s, "r") as f:
            assert f.attrs["precision"] == "int8"
            assert f.attrs["int8_fidelity_frames"] > 0
            assert 0.9 <= f.attrs["int8_fidelity_cos_min"] <= f.attrs["int8_fidelity_cos_mean"] <= 1.0 + 1e-6
