import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from cache.reader import load_cache
from cache.store import list_shards
from pipeline.config import load_config
from pipeline.errors import MissingWeightsError, PipelineError
from tests.conftest import EXTRACTED, copy_dataset


@pytest.fixture(scope="module")
def cached(tmp_path_factory, face_dataset):
    """Extract on a copy of the session's detected dataset: a module's fixture writes only into its own
    folder (issue 27; before, extract's failures.csv rows landed in the folder test_detect reads)."""
    from pipeline.registry import stage

    root = tmp_path_factory.mktemp("cached")
    copy_dataset(face_dataset["dir"], root, without=EXTRACTED)
    cfg = load_config(face_dataset["params"], data_root=str(root))
    summary = stage("extract").run(cfg, dataset="faces")
    return {**face_dataset, "cfg": cfg, "dir": cfg.dataset_dir("faces")}, summary


def _width(cfg) -> int:
    """resnet18's 512 plus extract.motion's columns (pipeline/motion.py)."""
    from pipeline.motion import motion_dim

    return 512 + motion_dim(cfg.extract.motion)


@pytest.mark.slow
def test_shard_schema_and_provenance(cached):
    ds, summary = cached
    d = _width(ds["cfg"])
    assert summary["cached"] == 5 and summary["failed"] == 0
    shards = list_shards(ds["dir"] / "features")
    assert len(shards) == 3  # shard_size 2
    with h5py.File(shards[0], "r") as f:
        n = f["features"].shape[0]
        assert f["features"].shape == (n, 105, d) and f["features"].dtype == np.float16
        assert f["features"].chunks == (1, 105, d)
        assert f["label"].dtype == np.int64 and f["frame_index"].shape == (n, 105)
        assert f["flags"].dtype == np.uint8 and f["landmarks"].shape == (n, 105, 5, 2)
        assert f["landmarks"].dtype == np.float32
        for key in ("class_names", "backbone", "feature_dim", "weights", "weights_sha256", "input_convention",
                    "format_version", "versions", "params", "params_hash"):
            assert key in f.attrs, key
        assert f.attrs["weights"] == "random:seed=0" and int(f.attrs["feature_dim"]) == d
    cache = load_cache(ds["dir"] / "features")
    assert cache.class_names == ["happiness", "neutral", "sadness", "surprise"]  # neutral: no_face.mp4's folder
    assert sorted(cache.video_id) == ["happiness/single_face", "happiness/video_01", "sadness/a/clip",
                                      "sadness/b/clip", "surprise/face_noface"]
    assert cache.class_names[cache.label[cache.video_id.index("surprise/face_noface")]] == "surprise"
    assert np.isfinite(cache.features.astype(np.float32)).all()
    resident = cache.to_torch("cpu")
    assert resident.dtype == torch.float16 and tuple(resident.shape) == (5, 105, d)
    with h5py.File(ds["dir"] / "features" / "index.h5", "r") as f:
        assert f["features"].shape == (5, 105, d) and f["features"].is_virtual
        i = [v.decode() for v in f["video_id"][:]].index("sadness/a/clip")
        j = cache.video_id.index("sadness/a/clip")
        np.testing.assert_array_equal(f["features"][i], cache.features[j])


@pytest.mark.slow
def test_contact_sheet_shows_the_mesh_on_real_faces(cached):
    """qc/extract_contact_sheet.png: per sampled video (qc_samples 2) 4 chosen frames, each its aligned crop and, with
    the default flow_hog_mesh, the mesh crop with the 468 points in green (the network sees a face)."""
    import cv2

    from pipeline.qc import TILE

    ds, summary = cached
    assert ds["cfg"].extract.motion == "flow_hog_mesh"
    sheet = cv2.imread(summary["contact_sheet"])[..., ::-1]
    assert sheet.shape == (2 * TILE, 8 * TILE, 3)
    for j in (1, 3, 5, 7):  # the first video's (single_face) mesh tiles
        tile = sheet[:TILE, j * TILE:(j + 1) * TILE]
        assert (tile == (0, 220, 0)).all(-1).sum() > 200, j  # most points drawn, none red
        assert not (tile == (255, 48, 48)).all(-1).any()


def test_contact_sheet_without_videos_is_still_written(tmp_path):
    """An output of the stage: with `detect.qc_samples: 0` a tile says so (a missing output would make the stage
    never current)."""
    from pipeline.qc_extract import extract_contact_sheet

    out = extract_contact_sheet([], tmp_path / "qc" / "sheet.png", 0, "flow_hog_mesh", 224, 0.0)
    assert out.is_file() and out.stat().st_size > 100


@pytest.mark.slow
def test_plain_tools_read_shards(cached):
    ds, _ = cached
    d = _width(ds["cfg"])
    shard = list_shards(ds["dir"] / "features")[0]
    with h5py.File(shard, "r") as f:  # plain h5py, none of our code
        assert f["features"].shape == (2, 105, d) and f["video_id"].asstr()[0]
    if shutil.which("h5ls"):  # .ci/run installs Debian's hdf5-tools
        out = subprocess.run(["h5ls", str(shard)], capture_output=True, text=True, check=True).stdout
        assert "features" in out and f"{{2, 105, {d}}}" in out


@pytest.mark.slow
def test_golden_features(cached):
    from tests.make_golden import GOLDEN, golden_features

    np.testing.assert_allclose(golden_features(), np.load(GOLDEN), rtol=2e-3, atol=2e-3)


@pytest.mark.slow
def test_verify_accepts_and_catches(cached, tmp_path):
    from pipeline.commands.verify import verify

    ds, _ = cached
    problems, stats = verify(ds["cfg"], "faces")
    assert problems == [] and stats["videos"] == 5 and stats["failed_videos"] == 3
    # A copy of one shard under another name: the same videos twice → reported.
    feats = ds["dir"] / "features"
    dup = feats / "shard-09999.h5"
    shutil.copy(list_shards(feats)[0], dup)
    try:
        problems, _ = verify(ds["cfg"], "faces")
        assert any("more than once" in p for p in problems)
    finally:
        dup.unlink()


@pytest.mark.slow
def test_keep_crops(face_dataset, tmp_path):
    from pipeline.registry import stage

    cfg = load_config(face_dataset["params"], data_root=str(tmp_path), overrides=["extract.keep_crops=true"])
    copy_dataset(face_dataset["dir"], tmp_path, without=EXTRACTED)
    stage("extract").run(cfg, dataset="faces")
    with h5py.File(list_shards(tmp_path / "faces" / "features")[0], "r") as f:
        import cv2

        jpg = f["crops"][0, 0]
        img = cv2.imdecode(np.asarray(jpg), cv2.IMREAD_COLOR)
        assert img.shape == (224, 224, 3)


def _all_hold_crops(features) -> bool:
    shards = list_shards(features)
    return bool(shards) and all("crops" in h5py.File(s, "r") for s in shards)


@pytest.mark.slow
def test_crops_are_kept_by_later_extracts_without_the_setting(face_dataset, tmp_path):
    """Issue 29: an extract with extract.keep_crops false (the default) never drops a cache's crops,
    neither when the cache is current nor when other parameters make it stale; keep_crops true on a
    cache without crops redoes it with them."""
    from pipeline.registry import stage

    copy_dataset(face_dataset["dir"], tmp_path, without=EXTRACTED)
    features = tmp_path / "faces" / "features"
    plain = load_config(face_dataset["params"], data_root=str(tmp_path))
    assert stage("extract").run(plain, dataset="faces")["cached"] == 5 and not _all_hold_crops(features)
    keep = load_config(face_dataset["params"], data_root=str(tmp_path), overrides=["extract.keep_crops=true"])
    assert stage("extract").run(keep, dataset="faces")["computed"] == 5 and _all_hold_crops(features)
    assert "skipped" in stage("extract").run(plain, dataset="faces")  # current: nothing redone, nothing dropped
    assert _all_hold_crops(features)
    other = load_config(face_dataset["params"], data_root=str(tmp_path), overrides=["extract.input_convention=unit"])
    assert stage("extract").run(other, dataset="faces")["computed"] == 5  # stale: every video redone, with its crops
    assert _all_hold_crops(features)


def _resnet_state(prefix: str = "", fc_out: int = 7, drop: str | None = None) -> dict:
    from torchvision.models import resnet18

    sd = resnet18(num_classes=fc_out).state_dict()
    sd = {prefix + k: v for k, v in sd.items() if not (drop and k.startswith(drop))}
    return {"state_dict": sd, "epoch": 3}


def test_checkpoint_with_module_prefix_and_7way_fc_loads(tmp_path):
    from pipeline.backbones.resnet import build_resnet18

    path = tmp_path / "emotion_fan_like.pth"
    torch.save(_resnet_state("module."), path)
    model, report = build_resnet18(str(path))
    assert report.weights == "checkpoint:emotion_fan_like.pth" and len(report.sha256) == 64
    assert report.ignored == ["fc.bias", "fc.weight"]
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 512)


def test_checkpoint_missing_layer4_is_refused(tmp_path):
    from pipeline.backbones.resnet import build_resnet18

    path = tmp_path / "partial.pth"
    torch.save(_resnet_state(drop="layer4"), path)
    with pytest.raises(PipelineError, match="layer4"):
        build_resnet18(str(path))


def test_imagenet_missing_gives_the_exact_file_and_command(tmp_path, monkeypatch):
    from pipeline.backbones.resnet import build_resnet18

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError) as err:
        build_resnet18("imagenet")
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "IMAGENET1K_V1" in msg


def _run_extract(params, data_root):
    # The detector body is ~10x faster than ResNet-18 on CPU; the resume logic is the same.
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "extract", "--no-deps", "--params",
                             str(params), "--data-root", str(data_root), "--dataset", "faces",
                             "--set", "extract.backbone=retinaface_mnet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_killed_mid_shard_resumes_to_identical_features(face_dataset, tmp_path):
    """SIGKILL while shards are being written: no partial shard is visible; the rerun equals a clean run."""
    def copy_to(dst):
        copy_dataset(face_dataset["dir"], dst, without=EXTRACTED)
        return dst

    clean, killed = copy_to(tmp_path / "clean"), copy_to(tmp_path / "killed")
    assert _run_extract(face_dataset["params"], clean).wait(timeout=300) == 0
    proc = _run_extract(face_dataset["params"], killed)
    feats = killed / "faces" / "features"
    deadline = time.time() + 300
    while time.time() < deadline and not list_shards(feats):
        time.sleep(0.05)
    assert proc.poll() is None, "extract finished before the kill: nothing would be resumed"
    proc.send_signal(signal.SIGKILL)  # one shard done, the next one in progress
    proc.wait()
    n_clean = len(list_shards(clean / "faces" / "features"))
    assert 1 <= len(list_shards(feats)) < n_clean, "the kill did not land mid-run"  # (issue 27)
    for s in list_shards(feats):  # whatever is visible under a final name is complete
        with h5py.File(s, "r") as f:
            assert f["features"].shape[0] == f["video_id"].shape[0] > 0
    assert _run_extract(face_dataset["params"], killed).wait(timeout=300) == 0
    a, b = load_cache(clean / "faces" / "features"), load_cache(feats)
    assert a.video_id == b.video_id
    assert a.features.tobytes() == b.features.tobytes()
    assert not [p for p in os.listdir(feats) if p.endswith(".tmp")]


@pytest.mark.slow
def test_lazy_torch_dataset_in_worker_processes(cached):
    from torch.utils.data import DataLoader

    from cache.reader import FeatureDataset

    ds, _ = cached
    data = FeatureDataset(ds["dir"] / "features")
    assert len(data) == 5 and data._files == {}  # nothing opened before a worker asks
    feats = [x for x, _ in DataLoader(data, batch_size=2, num_workers=2)]
    assert sum(len(x) for x in feats) == 5 and feats[0].shape[1:] == (105, _width(ds["cfg"]))
    whole = load_cache(ds["dir"] / "features")
    np.testing.assert_array_equal(torch.cat(feats).numpy(), whole.features.astype(np.float32))
