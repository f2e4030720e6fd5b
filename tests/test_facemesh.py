"""The torch port of MediaPipe's face mesh network (pipeline/facemesh.py): no mediapipe at test time.

The fixture (tests/data/facemesh_ref.npz, written by `bench/facemesh_port.py --fixture`) holds three
`mesh_crop`s of real faces and the TFLite interpreter's outputs for them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.align import template
from pipeline.facemesh import CROP, MARGIN, mesh_and_scores, mesh_landmarks

REF = Path(__file__).parent / "data" / "facemesh_ref.npz"
# mesh points beside the ArcFace template's: eye centres (mean of the two corners), nose tip, mouth corners
MESH_EYE_R, MESH_EYE_L, MESH_NOSE, MESH_MOUTH_R, MESH_MOUTH_L = (33, 133), (362, 263), 1, 61, 291


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(REF) as z:
        return dict(z)


def scores(crops: np.ndarray) -> np.ndarray:
    return mesh_and_scores(crops)[1]


def test_port_reproduces_tflite(ref):
    out = mesh_landmarks(ref["crops"])
    assert out.shape == (len(ref["crops"]), 468, 3) and out.dtype == np.float32
    assert np.abs(out - ref["landmarks"]).max() < 0.05
    assert np.abs(scores(ref["crops"]) - ref["scores"]).max() < 1e-4


def test_mesh_lands_on_the_template(ref):
    """Eye centres, nose tip and mouth corners of the mesh sit where the alignment put the 5 points."""
    pts = mesh_landmarks(ref["crops"])[..., :2]
    five = np.stack([pts[:, list(MESH_EYE_R)].mean(1), pts[:, list(MESH_EYE_L)].mean(1), pts[:, MESH_NOSE],
                     pts[:, MESH_MOUTH_R], pts[:, MESH_MOUTH_L]], axis=1)
    err = np.linalg.norm(five - template(CROP, MARGIN), axis=-1)
    # template eyes are 54 px apart; the alignment is a least-squares fit, so a turned head leaves the
    # points several px off their template places (up to ~10 px here, mean 5), while a wrong margin, a flipped
    # x/y moves them by far more (precision is test_port_reproduces_tflite's job)
    assert err.mean() < 7.0 and err.max() < 12.0, err
    assert (scores(ref["crops"]) > 0.5).all()


def test_blank_crop_is_not_a_face():
    grey = np.full((1, CROP, CROP, 3), 128, np.uint8)
    assert scores(grey)[0] < 0.5

