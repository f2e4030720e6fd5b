import warnings

import numpy as np
import pytest

from pipeline.align import align
from pipeline.detector import RetinaFaceDetector
from pipeline.video import read_frames
from tests.conftest import VIDEOS


@pytest.fixture(scope="module")
def faces():
    frames = read_frames(VIDEOS / "video_01.mp4", [0, 45]) | read_frames(VIDEOS / "single_face.mp4", [10, 40])
    det = RetinaFaceDetector(det_size=480)
    return [(f, det.detect([f])[0].landmarks[0]) for f in frames.values()]


def test_matches_insightface_norm_crop(faces):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage's SimilarityTransform.estimate deprecation inside insightface
        from insightface.utils.face_align import norm_crop

        for frame, lm in faces:
            ours = align(frame, lm, size=224)
            ref = norm_crop(frame, lm, 224)
            assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
            assert np.abs(ours.astype(float) - ref).mean() < 1.0


def test_margin_widens_the_crop(faces):
    from pipeline.align import similarity, template

    frame, lm = faces[0]
    tight = similarity(lm, template(224, 0.0))
    wide = similarity(lm, template(224, 0.25))
    # Same face, 1.25x smaller in the crop: the scale of the transform shrinks by 1.25.
    assert np.linalg.norm(tight[:, 0]) / np.linalg.norm(wide[:, 0]) == pytest.approx(1.25, rel=1e-6)
