"""Fixtures that build tiny replicas of the datasets' original layouts in tmp_path.

They are fixtures (not imported helpers) so that the tests collect the same way under any
pytest import mode and rootdir.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def _touch(path: Path, text: str = "") -> Path:
    """An existing (empty, or holding `text`) file, parents created: stands in for a video file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _write_frames(folder: Path, names: list[str]) -> Path:
    """A frame folder of real, tiny images (8x8), written with OpenCV in the given file names."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        image = np.full((8, 8, 3), 40 * i % 256, np.uint8)
        assert cv2.imwrite(str(folder / name), image), folder / name
    return folder


@pytest.fixture
def touch():
    return _touch


@pytest.fixture
def write_frames():
    return _write_frames
