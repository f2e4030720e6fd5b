"""The detector on real frames: batching, float landmarks, size mapping, the insightface backend's errors."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.detector import InsightFaceDetector, RetinaFaceDetector, priors
from pipeline.errors import MissingWeightsError
from pipeline.video import read_frames
from tests.conftest import VIDEOS


@pytest.fixture(scope="module")
def frames():
    return list(read_frames(VIDEOS / "video_01.mp4", [0, 30, 60, 89]).values())


def test_batched_equals_one_by_one(frames):
    det = RetinaFaceDetector(det_size=480)
    batched = det.detect(frames)
    for f, b in zip(frames, batched):
        single = det.detect([f])[0]
        np.testing.assert_allclose(single.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(single.landmarks, b.landmarks, atol=1e-3)


def test_matches_the_wheel_in_float_at_full_resolution(frames):
    from retinaface import detect_faces

    det = RetinaFaceDetector(det_size=4096, threshold=0.9)  # no resize: same input as the wheel
    ours = det.detect(frames[:1])[0]
    ref = detect_faces(frames[0], score_threshold=0.9)
    assert len(ours) == len(ref) >= 3  # several people in video_01
    for face in ref:
        k = np.argmin(np.abs(ours.boxes[:, 0] - face.x) + np.abs(ours.boxes[:, 1] - face.y))
        pts = np.array([[p.x, p.y] for p in face.landmarks])
        # The wheel truncates to ints (and uses a slightly different mean): within 2 px.
        assert np.abs(ours.landmarks[k] - pts).max() < 2.0


def test_downscaled_detection_maps_back_to_original_pixels(frames):
    full = RetinaFaceDetector(det_size=4096).detect(frames[:1])[0]
    small = RetinaFaceDetector(det_size=320).detect(frames[:1])[0]
    big = full.boxes[0]
    k = np.argmin(np.abs(small.boxes - big).sum(1))
    size = big[2] - big[0]
    assert np.abs(small.boxes[k] - big).max() < 0.15 * size


def test_priors_cover_every_level():
    p = priors(64, 96)
    assert p.shape == ((8 * 12 + 4 * 6 + 2 * 3) * 2, 4)
    assert (p[:, :2] > 0).all() and (p[:, :2] < 1).all()


def test_missing_insightface_pack_names_the_directory(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        InsightFaceDetector(str(tmp_path / "buffalo_l"))
    assert str(tmp_path / "buffalo_l") in str(err.value) and "downloaded" in str(err.value)


def test_torch_runtime_matches_onnxruntime(frames):
    """The torch port (the GPU path) through the same preprocessing and decoding, here on the CPU."""
    ort_det = RetinaFaceDetector(det_size=480, runtime="onnxruntime")
    torch_det = RetinaFaceDetector(det_size=480, runtime="torch", device="cpu")
    assert "torch cpu" in torch_det.describe()
    for a, b in zip(ort_det.detect(frames), torch_det.detect(frames)):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_runtime_auto_is_onnxruntime_on_cpu():
    from pipeline.detector import resolve_runtime

    assert resolve_runtime("auto", "cpu") == "onnxruntime"
    assert resolve_runtime("torch", "cpu") == "torch"
