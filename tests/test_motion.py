"""extract.motion = flow / flow_hog / hog, their `_fine` HOG and the `_mesh` shape (issue 31, item 5): what they measure, and how they sit in the cache."""
import cv2
import h5py
import numpy as np
import pytest

from cache.reader import load_cache
from cache.store import list_shards
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.motion import GRID, HOG_CELLS, SIZE, motion_dim, motion_features
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


def test_flow_hog_is_the_flow_then_hog_of_where_the_faces_edges_are():
    """flow_hog's first 128 columns are `flow`'s; its HOG is the same for a shifted copy of a frame's edges only
    where they did not move: a horizontal bar (a brow) lowered by a cell changes the cells it left and entered, and
    a bar turned upright moves the weight from the horizontal-edge orientations to the vertical-edge ones."""
    face = np.full((224, 224, 3), 128, np.uint8)
    brow, lowered, upright = face.copy(), face.copy(), face.copy()
    brow[56:64, 40:184] = 20  # a dark bar in the second row of 56-px cells (flow_hog's 28 px at 112)
    lowered[112:120, 40:184] = 20
    upright[40:184, 108:116] = 20
    out = motion_features(np.stack([brow, lowered, upright]), "flow_hog")
    assert out.shape == (3, motion_dim("flow_hog")) and motion_dim("flow_hog") == 128 + 324
    np.testing.assert_array_equal(out[:, :128], motion_features(np.stack([brow, lowered, upright]), "flow"))
    hog = out[:, 128:]
    np.testing.assert_array_equal(hog, motion_features(np.stack([brow, lowered, upright]), "hog"))  # `hog`: HOG alone
    assert SIZE // HOG_CELLS["flow_hog"] == 4 and np.abs(hog[0] - hog[1]).max() > 0.1  # the bar's move shows
    per_bin = hog.reshape(3, -1, 9).sum(axis=1)  # orientation histograms summed over blocks and cells
    horizontal_edge, vertical_edge = int(per_bin[0].argmax()), int(per_bin[2].argmax())
    assert horizontal_edge != vertical_edge  # skimage bins gradient orientation: a bar's angle moves its weight


def test_fine_hog_is_the_same_flow_and_a_finer_grid_of_cells():
    """`flow_hog_fine` / `hog_fine`: the flow columns unchanged, then 8x8 cells of 14 px (7x7 blocks, 1764 numbers);
    a bar moved within one of flow_hog's 28-px cells still moves between 14-px ones."""
    face = np.full((224, 224, 3), 128, np.uint8)
    brow, nudged = face.copy(), face.copy()
    brow[60:68, 40:184] = 20  # in the third row of 28-px cells at 224 px, and their upper half
    nudged[84:92, 40:184] = 20  # the same 56-px cell row, the lower 28-px half
    frames = np.stack([brow, nudged])
    fine = motion_features(frames, "flow_hog_fine")
    assert motion_dim("hog_fine") == 1764 and fine.shape == (2, 128 + 1764) == (2, motion_dim("flow_hog_fine"))
    np.testing.assert_array_equal(fine[:, :128], motion_features(frames, "flow"))
    np.testing.assert_array_equal(fine[:, 128:], motion_features(frames, "hog_fine"))
    coarse = motion_features(frames, "hog")
    moved = lambda h: np.abs(h[0] - h[1]).max()  # noqa: E731
    assert moved(coarse) < 1e-6 and moved(fine[:, 128:]) > 0.5  # within a 28-px cell HOG is blind to the move


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
    for motion in ("none", "flow", "flow_hog", "flow_hog_mesh"):
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
    both = runs["flow_hog"]  # the same backbone and flow columns, then HOG's
    assert both.feature_dim == 384 + 128 + 324 and both.video_id == flow.video_id
    np.testing.assert_array_equal(both.features[..., :512], flow.features)
    assert np.abs(both.features[..., 512:].astype(np.float32)).max() > 0.1
    mesh = runs["flow_hog_mesh"]  # then the face's shape: 468 points a frame in the pose-free frame
    assert mesh.feature_dim == both.feature_dim + 936 and mesh.video_id == both.video_id
    np.testing.assert_array_equal(mesh.features[..., :both.feature_dim], both.features)
    pts = mesh.features[..., both.feature_dim:].astype(np.float32).reshape(*mesh.features.shape[:2], 468, 2)
    from pipeline.motion import LEFT_EYE, RIGHT_EYE

    eyes = pts[..., list(LEFT_EYE), :].mean(-2) - pts[..., list(RIGHT_EYE), :].mean(-2)
    assert np.abs(eyes[..., 1]).max() < 0.01 and (eyes[..., 0] > 0.5).all()  # level, the left eye to the image's right
    chin, brow = pts[..., 152, 1], pts[..., 9, 1]  # image y grows downwards
    assert (chin > brow).all()


def test_the_canonical_mesh_is_free_of_position_scale_and_roll():
    """`canonical_mesh` of a face moved, scaled and rolled in the picture is the face's own; the eye line is level; a
    mouth point that moves (not one of the STABLE points) moves alone."""
    from pipeline.motion import LEFT_EYE, MESH_POINTS, RIGHT_EYE, canonical_mesh

    rng = np.random.default_rng(0)
    face = rng.normal(0, 30, (MESH_POINTS, 2)) + 96
    a, k, shift = np.deg2rad(20), 2.5, np.array([40.0, -15.0])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = face @ rot.T * k + shift
    smile = face.copy()
    smile[61] += (3.0, -2.0)  # a lip corner
    c = canonical_mesh(np.stack([face, moved, smile]))
    np.testing.assert_allclose(c[1], c[0], atol=1e-5)
    assert c[0, LEFT_EYE, 1].mean() == pytest.approx(c[0, RIGHT_EYE, 1].mean(), abs=1e-5)
    changed = np.abs(c[2] - c[0]).max(axis=1) > 1e-6
    assert changed.tolist() == [i == 61 for i in range(MESH_POINTS)]


def test_a_mesh_motion_needs_the_mesh_crops():
    frames = np.stack([_texture(0), _texture(1)])
    with pytest.raises(ValueError, match="mesh crop"):
        motion_features(frames, "flow_hog_mesh")
    assert motion_dim("flow_hog_mesh") == motion_dim("flow_hog") + 936 and motion_dim("mesh") == 936
