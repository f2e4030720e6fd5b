import pytest

from pipeline.adapters import make_adapter
from pipeline.errors import DatasetError

EXPRESSIONS = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")


@pytest.fixture
def oulu(tmp_path, write_frames):
    for subject in ("P001", "P002"):
        for expression in EXPRESSIONS:
            write_frames(tmp_path / "OriginalImg/VL/Strong" / subject / expression, ["000.jpeg", "001.jpeg"])
    write_frames(tmp_path / "OriginalImg/NI/Dark/P003/Fear", ["000.jpeg"])
    return tmp_path


def test_lists_vl_strong(oulu):
    listing = make_adapter("oulu", oulu).list_videos()
    assert len(listing.entries) == 12
    entry = next(e for e in listing.entries if e.video_id == "OriginalImg/VL/Strong/P002/Sadness")
    assert (entry.label, entry.subject, entry.fold) == ("sadness", "P002", None)
    assert sorted({e.label for e in listing.entries}) == sorted(
        ("anger", "disgust", "fear", "happiness", "sadness", "surprise"))


def test_other_camera_and_illumination(oulu):
    listing = make_adapter("oulu", oulu, options={"camera": "NI", "illumination": "Dark"}).list_videos()
    assert [(e.subject, e.label) for e in listing.entries] == [("P003", "fear")]


def test_classes_exclude(oulu):
    listing = make_adapter("oulu", oulu, classes=("fear",)).list_videos()
    assert len(listing.entries) == 2 and sum(listing.excluded.values()) == 10


def test_wrong_root_names_missing_path(tmp_path):
    (tmp_path / "OriginalImg").mkdir()
    with pytest.raises(DatasetError, match="OriginalImg/VL/Strong"):
        make_adapter("oulu", tmp_path).list_videos()
