import pytest

from pipeline.adapters import make_adapter
from pipeline.errors import DatasetError

TRAIN = ["Action/Sad/0010 Sad", "Action/Happy/0003 Happy", "Talkshow/Neutral/0101 Neutral"]
TEST = ["Crime/Angry/0007 Angry", "Crime/Fear/0008 Fear", "School/Surprise/0002 Disgust"]


@pytest.fixture
def ferv(tmp_path, touch, write_frames):
    touch(tmp_path / "4_setups/All_scenes/train_All.csv", "\n".join(TRAIN) + "\n")
    touch(tmp_path / "4_setups/All_scenes/test_All.csv", "\n".join(TEST + ["Crime/Disgust/0099 Disgust"]) + "\n")
    for line in TRAIN + TEST:
        write_frames(tmp_path / "2_ClipsforFaceCrop" / line.split()[0], ["0001.jpg", "0002.jpg"])
    return tmp_path


def test_fixed_split_labels_from_folder(ferv):
    listing = make_adapter("ferv39k", ferv).list_videos()
    got = {e.subject: (e.label, e.split, e.extra["scene"]) for e in listing.entries}
    assert got == {
        "Action/Sad/0010": ("sadness", "train", "Action"),
        "Action/Happy/0003": ("happiness", "train", "Action"),
        "Talkshow/Neutral/0101": ("neutral", "train", "Talkshow"),
        "Crime/Angry/0007": ("anger", "test", "Crime"),
        "Crime/Fear/0008": ("fear", "test", "Crime"),
    }
    entry = next(e for e in listing.entries if e.subject == "Crime/Fear/0008")
    assert entry.video_id == "2_ClipsforFaceCrop/Crime/Fear/0008" and entry.path.is_dir()
    assert {(v, k) for v, k, _ in listing.problems} == {
        ("2_ClipsforFaceCrop/School/Surprise/0002", "label_mismatch"), ("Crime/Disgust/0099", "missing")}


def test_classes_exclude(ferv):
    listing = make_adapter("ferv39k", ferv, classes=("anger",)).list_videos()
    assert [e.subject for e in listing.entries] == ["Crime/Angry/0007"]
    assert sum(listing.excluded.values()) == 4


def test_wrong_root(tmp_path):
    with pytest.raises(DatasetError, match="train_All.csv") as err:
        make_adapter("ferv39k", tmp_path).list_videos()
    assert "2_ClipsforFaceCrop" in str(err.value)
