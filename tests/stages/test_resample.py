import h5py
import numpy as np
import pytest

from pipeline.config import ResampleConfig
from pipeline.errors import VideoError
from pipeline.resampling import choose_frames


@pytest.mark.slow
def test_frame_index_inside_face_span(face_dataset):
    with h5py.File(face_dataset["dir"] / "faces.h5", "r") as f, h5py.File(face_dataset["dir"] / "frames.h5") as fr:
        assert "frame_index" not in f["surprise/face_noface"]  # faces.h5 is detect's alone
        idx = fr["surprise/face_noface/frame_index"][:]
        flags = f["surprise/face_noface/flags"][:]
        assert idx.shape == (105,) and (np.diff(idx) >= 0).all()
        assert idx.max() <= 74 and (flags[idx] != 0).all()
        short = fr["sadness/a/clip/frame_index"][:]
        assert short.shape == (105,) and short.max() <= 23  # 24 frames: repeated, never invented


def test_policies_and_gaps():
    flags = np.zeros(300, np.uint8)
    flags[50:250] = 1
    flags[120:160] = 0  # a long gap inside the span stays absent
    idx = choose_frames(flags, ResampleConfig(policy="uniform"))
    assert idx.min() == 50 and idx.max() == 249 and (flags[idx] != 0).all()
    clip = choose_frames(flags, ResampleConfig(policy="clip"))
    assert (flags[clip] != 0).all() and clip.max() - clip.min() <= 104 + 40
    with pytest.raises(VideoError, match="no_span"):
        choose_frames(np.zeros(10, np.uint8), ResampleConfig())
