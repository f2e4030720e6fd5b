import pytest

from pipeline.adapters import ADAPTERS, make_adapter
from pipeline.errors import DatasetError


@pytest.fixture
def bu4dfe(tmp_path, touch, write_frames):
    for subject in ("F001", "M043"):
        for expression in ("Angry", "Happy", "Surprise"):
            folder = write_frames(tmp_path / subject / expression, ["000.jpg", "001.jpg", "002.jpg"])
            touch(folder / "000.wrl")  # the meshes lie beside the texture frames
    write_frames(tmp_path / "F001" / "Smirk", ["000.jpg"])  # not an emotion name
    (tmp_path / "docs").mkdir()  # not a subject folder: ignored
    return tmp_path


def test_lists_sequences_by_subject(bu4dfe):
    listing = make_adapter("bu4dfe", bu4dfe).list_videos()
    assert len(listing.entries) == 6
    entry = next(e for e in listing.entries if e.video_id == "M043/Happy")
    assert (entry.label, entry.subject, entry.fold) == ("happiness", "M043", None)
    assert entry.path == bu4dfe / "M043" / "Happy"
    assert {e.subject for e in listing.entries} == {"F001", "M043"}
    assert [(v, k) for v, k, _ in listing.problems] == [("F001/Smirk", "unknown_label")]


def test_bu3dfe_alias_and_classes(bu4dfe):
    assert ADAPTERS["bu3dfe"] is ADAPTERS["bu4dfe"]
    listing = make_adapter("bu3dfe", bu4dfe, classes=("anger", "surprise")).list_videos()
    assert len(listing.entries) == 4
    assert listing.excluded == {"class not in classes: happiness": 2}


def test_wrong_root(tmp_path):
    (tmp_path / "Sessions").mkdir()
    with pytest.raises(DatasetError, match=r"no subject folders \(F###, M###\)"):
        make_adapter("bu4dfe", tmp_path).list_videos()
    with pytest.raises(DatasetError, match="does not exist"):
        make_adapter("bu4dfe", tmp_path / "nope").list_videos()
