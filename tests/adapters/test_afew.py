import pytest

from pipeline.adapters import make_adapter
from pipeline.errors import DatasetError


@pytest.fixture
def afew(tmp_path, touch):
    touch(tmp_path / "Train_AFEW/Angry/000046280.avi")
    touch(tmp_path / "Train_AFEW/Happy/000147120.avi")
    touch(tmp_path / "Train_AFEW/Neutral/001130240.avi")
    touch(tmp_path / "Train_AFEW/AlignedFaces_LBPTOP_Points/Faces/000046280/1.png")  # not a class
    touch(tmp_path / "Val_AFEW/Sad/000529360.avi")
    touch(tmp_path / "Val_AFEW/Surprise/002105934.avi")
    touch(tmp_path / "Val_AFEW/Surprise/notes.txt")  # not a video
    return tmp_path


def test_train_and_val_splits(afew):
    listing = make_adapter("afew", afew).list_videos()
    got = {e.video_id: (e.label, e.split, e.subject) for e in listing.entries}
    assert got == {
        "Train_AFEW/Angry/000046280": ("anger", "train", "000046280"),
        "Train_AFEW/Happy/000147120": ("happiness", "train", "000147120"),
        "Train_AFEW/Neutral/001130240": ("neutral", "train", "001130240"),
        "Val_AFEW/Sad/000529360": ("sadness", "test", "000529360"),
        "Val_AFEW/Surprise/002105934": ("surprise", "test", "002105934"),
    }
    assert listing.problems == [] and listing.excluded == {}


def test_plain_train_val_folders_and_classes(tmp_path, touch):
    touch(tmp_path / "Train/Fear/1.avi")
    touch(tmp_path / "Train/Disgust/2.avi")
    touch(tmp_path / "Val/Fear/3.avi")
    listing = make_adapter("afew", tmp_path, classes=("fear",)).list_videos()
    assert [(e.video_id, e.split) for e in listing.entries] == [("Train/Fear/1", "train"), ("Val/Fear/3", "test")]
    assert listing.excluded == {"class not in classes: disgust": 1}


def test_wrong_root_names_missing_folders(tmp_path, touch):
    touch(tmp_path / "Train_AFEW/Angry/1.avi")
    with pytest.raises(DatasetError, match="none of Val_AFEW, Val was found"):
        make_adapter("afew", tmp_path).list_videos()
