"""extract.motion = flow (issue 31, item 5): what it measures, and how it sits in the cache."""
import cv2
import h5py
import numpy as np
import pytest

from cache.reader import load_cache
from cache.store import list_shards
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.motion import GRID, motion_dim, motion_features
from tests.conftest import EXTRACTED, copy_dataset


def _texture(seed: int = 0) -> np.ndarray:
    """Smooth random texture (blobs of ~8 px): flow is well posed on it, as on skin and features."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.integers(0, 255, (224, 224, 3), np.uint8).astype(np.float32), (0, 0), 8)
    return ((t - t.min()) / (t.max() - t.min()) * 255).astype(np.uint8)


def test_flow_reads_a_known_shift_and_is_zero_on_the_reference_frame():
    face = _texture()
    right, down = np.roll(face, 4, axis=1), np.roll(face, 4, axis=0)  # 4 px at 224 = 2 px at the 112-px flow
    f = motion_features(np.stack([face, right, down]), "flow").reshape(3, GRID, GRID, 2)
    inner = (slice(2, -2), slice(2, -2))  # the rolled border wraps round: judge the middle cells
    assert np.abs(f[0]).max() < 0.02  # a frame against itself: no motion
    assert f[1][inner][..., 0].mean() == pytest.approx(2.0, abs=0.3) and abs(f[1][inner][..., 1].mean()) < 0.2
    assert f[2][inner][..., 1].mean() == pytest.approx(2.0, abs=0.3) and abs(f[2][inner][..., 0].mean()) < 0.2
    assert motion_features(np.stack([face, right]), "none").shape == (2, 0) and motion_dim("flow") == 128


def test_an_unknown_motion_is_a_config_error(tmp_path):
    from tests.conftest import write_params

    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x")
    with pytest.raises(ConfigError, match="extract.motion"):
        load_config(params, overrides=["extract.motion=farneback"])


@pytest.mark.slow
def test_flow_columns_follow_the_backbone_in_the_cache(face_dataset, tmp_path):
    """On real videos: the shard is backbone + 128 columns wide, the backbone part is the motion-free
    cache's, and each video's first chosen frame has (near) zero motion: it is its own reference."""
    from pipeline.registry import stage

    runs = {}
    for motion in ("none", "flow"):
        root = tmp_path / motion
        copy_dataset(face_dataset["dir"], root, without=EXTRACTED)
        cfg = load_config(face_dataset["params"], data_root=str(root),
                          overrides=["extract.backbone=retinaface_mnet", f"extract.motion={motion}"])
        stage("extract").run(cfg, dataset="faces")
        runs[motion] = load_cache(root / "faces" / "features")
    plain, flow = runs["none"], runs["flow"]
    assert plain.feature_dim == 384 and flow.feature_dim == 384 + 128 and plain.video_id == flow.video_id
    np.testing.assert_array_equal(flow.features[..., :384], plain.features)
    assert np.abs(flow.features[:, 0, 384:].astype(np.float32)).max() < 0.1 and np.abs(flow.features[:, 1:, 384:].astype(np.float32)).max() > 0.5
    with h5py.File(list_shards(tmp_path / "flow" / "faces" / "features")[0], "r") as f:
        assert f.attrs["motion"] == "flow" and f.attrs["feature_dim"] == 512
