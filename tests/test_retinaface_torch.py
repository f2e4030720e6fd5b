"""The torch port of RetinaFace-MobileNet0.25 and its body features against onnxruntime on real frames."""
from __future__ import annotations

import copy
import hashlib
import itertools
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline.backbones.mnet import FEATURE_DIM, build_mnet_features, weights_sha256
from pipeline.retinaface_torch import (load_retinaface_torch, onnx_body_only, onnx_bytes,
                                      onnx_with_body_outputs)
from tests.conftest import decode

VIDEO = Path(__file__).parent / "data" / "videos" / "single_face.mp4"
MEAN_BGR = np.array([104, 117, 123], np.float32)


@pytest.fixture(scope="module")
def frame_bgr() -> np.ndarray:
    """Frame 10 of the fixture video (BGR uint8); the scikit-image astronaut if the video is absent."""
    if VIDEO.exists():
        frames = decode(VIDEO, 11)
        assert len(frames) == 11, f"could not decode 11 frames of {VIDEO}"
        return frames[-1]
    from skimage.data import astronaut  # public domain, ships with scikit-image

    return cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def port() -> torch.nn.Module:
    return load_retinaface_torch()


@pytest.fixture(scope="module")
def features() -> torch.nn.Module:
    return build_mnet_features()


def _session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def detector_session() -> ort.InferenceSession:
    return _session(onnx_bytes())


@pytest.fixture(scope="module")
def body_session() -> ort.InferenceSession:
    """The detector with its stage2 and stage3 outputs exposed: the reference for the features."""
    return _session(onnx_with_body_outputs())


def _detector_input(frame_bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    x = cv2.resize(frame_bgr, (width, height)).astype(np.float32) - MEAN_BGR
    return x.transpose(2, 0, 1)[None].copy()  # (1, 3, H, W)


def _best_box(conf: np.ndarray, loc: np.ndarray, width: int, height: int) -> np.ndarray:
    """Decode the highest-scoring anchor of one image to (x1, y1, x2, y2) pixels (docs/reference.md §4)."""
    priors = []
    for step, sizes in ((8, (16, 32)), (16, (64, 128)), (32, (256, 512))):
        for i, j, s in itertools.product(range(-(-height // step)), range(-(-width // step)), sizes):
            priors.append(((j + 0.5) * step / width, (i + 0.5) * step / height, s / width, s / height))
    prior = np.array(priors)[conf[:, 1].argmax()]
    d = loc[conf[:, 1].argmax()]
    cx, cy = prior[:2] + d[:2] * 0.1 * prior[2:]
    w, h = prior[2:] * np.exp(d[2:] * 0.2)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * [width, height, width, height]


@pytest.fixture(scope="module")
def face_crops(frame_bgr: np.ndarray, port: torch.nn.Module) -> torch.Tensor:
    """(2, 3, 224, 224) RGB 0..255: the detected face with 25% margin, and a shifted crop of it."""
    height, width = frame_bgr.shape[:2]
    with torch.inference_mode():
        loc, conf, _ = port(torch.from_numpy(_detector_input(frame_bgr, width, height)))
    assert conf[0, :, 1].max() > 0.9, "no confident face in the fixture frame"
    x1, y1, x2, y2 = _best_box(conf[0].numpy(), loc[0].numpy(), width, height)
    margin = 0.25 * max(x2 - x1, y2 - y1)
    crops = []
    for shift in (0.0, 0.3 * margin):
        box = np.array([x1 - margin + shift, y1 - margin, x2 + margin + shift, y2 + margin])
        box = np.clip(box, 0, [width, height, width, height]).round().astype(int)
        crop = frame_bgr[box[1]:box[3], box[0]:box[2]]
        crops.append(cv2.resize(crop, (224, 224))[..., ::-1].transpose(2, 0, 1))  # BGR -> RGB, CHW
    return torch.from_numpy(np.stack(crops).astype(np.float32))


@pytest.mark.parametrize("width, height", [(320, 320), (640, 352)])
def test_port_matches_onnxruntime(frame_bgr, port, detector_session, width, height):
    x = _detector_input(frame_bgr, width, height)
    expected = detector_session.run(None, {"input": x})
    with torch.inference_mode():
        actual = port(torch.from_numpy(x))
    for name, a, e in zip(("loc", "conf", "landmarks"), actual, expected):
        assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} vs onnxruntime {e.shape}"
        np.testing.assert_allclose(a.numpy(), e, rtol=0, atol=1e-4, err_msg=name)
    assert expected[1][0, :, 1].max() > 0.9  # the frame has a face: not a comparison of noise


def test_port_is_batched(frame_bgr, port):
    x = _detector_input(frame_bgr, 320, 320)
    batch = np.concatenate([x, x[:, :, ::-1].copy()])  # the frame and its upside-down copy
    with torch.inference_mode():
        alone = port(torch.from_numpy(x))
        together = port(torch.from_numpy(batch))
    for a, t in zip(alone, together):
        torch.testing.assert_close(t[:1], a, rtol=0, atol=1e-5)


def test_body_outputs_added_to_onnx(body_session):
    outputs = {o.name: o for o in body_session.get_outputs()}
    assert list(outputs) == ["loc", "conf", "landmarks", "stage2", "stage3"]
    assert outputs["stage2"].shape[1] == 128 and outputs["stage3"].shape[1] == 256


def test_mnet_features_match_onnxruntime_body(face_crops, features, body_session):
    with torch.inference_mode():
        actual = features(face_crops).numpy()
    bgr = (face_crops.flip(1) - torch.from_numpy(MEAN_BGR).view(1, 3, 1, 1)).numpy()
    stage2, stage3 = body_session.run(["stage2", "stage3"], {"input": bgr})
    expected = np.concatenate([stage2.mean(axis=(2, 3)), stage3.mean(axis=(2, 3))], axis=1)
    assert actual.shape == (2, FEATURE_DIM) and actual.dtype == np.float32
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()
    body_only = _session(onnx_body_only()).run(None, {"input": bgr})
    np.testing.assert_array_equal(body_only[0], stage2)
    np.testing.assert_array_equal(body_only[1], stage3)


def test_mnet_features_batch_invariant_and_channels_last(face_crops, features):
    fast_model = copy.deepcopy(features).to(memory_format=torch.channels_last)  # .to() is in place
    with torch.inference_mode():
        batch = features(face_crops)
        alone = features(face_crops[1:])
        fast = fast_model(face_crops.contiguous(memory_format=torch.channels_last))
    assert batch.shape == (2, FEATURE_DIM) and torch.isfinite(batch).all()
    assert not torch.allclose(batch[0], batch[1])  # different crops give different features
    torch.testing.assert_close(alone[0], batch[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast, batch, rtol=1e-5, atol=1e-5)


def test_mnet_rejects_wrong_shape(features):
    with pytest.raises(ValueError, match=r"got shape \(2, 224, 224, 3\)"):
        features(torch.zeros(2, 224, 224, 3))


def test_weights_sha256_is_of_the_onnx_bytes():
    assert weights_sha256() == hashlib.sha256(onnx_bytes()).hexdigest()
    assert len(weights_sha256()) == 64
