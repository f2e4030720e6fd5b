import pytest

from pipeline.adapters import make_adapter
from pipeline.errors import DatasetError

SPLIT = "EmoLabel_DataSplit/test(single-labeled)"
# set k's test csv: (video_name as the release writes it: an unpadded int, label code)
TEST_SETS = {1: [(1, 1), (2, 7)], 2: [(15, 3)], 3: [(120, 4)], 4: [(1234, 6)], 5: [(11697, 2), (99, 5)]}


@pytest.fixture
def dfew(tmp_path, touch, write_frames):
    for k, rows in TEST_SETS.items():
        touch(tmp_path / SPLIT / f"set_{k}.csv", "video_name,label\n" + "".join(f"{v},{l}\n" for v, l in rows))
        others = [r for j, rs in TEST_SETS.items() if j != k for r in rs]
        touch(tmp_path / f"EmoLabel_DataSplit/train(single-labeled)/set_{k}.csv",
              "video_name,label\n" + "".join(f"{v},{l}\n" for v, l in others))
    for v, _ in (r for rs in TEST_SETS.values() for r in rs):
        if v == 99:
            continue  # listed in a csv, missing on disk
        # part of the clips unpacked one folder deeper, as the zip parts do
        touch(tmp_path / "Clip/original" / ("part_2" if v > 1000 else "") / f"{v:05d}.mp4")
        write_frames(tmp_path / "Clip/clip_224x224" / f"{v:05d}", [f"{v:05d}_{i:05d}.jpg" for i in (1, 2)])
    return tmp_path


def test_official_folds_and_label_order(dfew):
    listing = make_adapter("dfew", dfew).list_videos()
    got = {e.subject: (e.label, e.fold, e.video_id) for e in listing.entries}
    assert got == {
        "00001": ("happiness", 1, "Clip/original/00001"),   # 1 Happy (official order)
        "00002": ("fear", 1, "Clip/original/00002"),        # 7 Fear
        "00015": ("neutral", 2, "Clip/original/00015"),
        "00120": ("anger", 3, "Clip/original/00120"),
        "01234": ("disgust", 4, "Clip/original/part_2/01234"),
        "11697": ("sadness", 5, "Clip/original/part_2/11697"),
    }
    assert all(e.split is None and e.path.suffix == ".mp4" for e in listing.entries)
    assert [(v, k) for v, k, _ in listing.problems] == [("00099", "missing")]


def test_frames_option_reads_face_folders(dfew):
    listing = make_adapter("dfew", dfew, options={"frames": True}).list_videos()
    entry = next(e for e in listing.entries if e.subject == "00002")
    assert entry.video_id == "Clip/clip_224x224/00002" and entry.path.is_dir() and entry.label == "fear"


def test_classes_and_unknown_label(dfew):
    (dfew / SPLIT / "set_2.csv").write_text("video_name,label\n15,3\n16,0\n")
    listing = make_adapter("dfew", dfew, classes=("happiness", "fear")).list_videos()
    assert sorted(e.label for e in listing.entries) == ["fear", "happiness"]
    assert listing.excluded == {"class not in classes: neutral": 1, "class not in classes: anger": 1,
                                "class not in classes: disgust": 1, "class not in classes: sadness": 1}
    kinds = {(v, k) for v, k, _ in listing.problems}
    assert kinds == {("00099", "missing"), ("00016", "missing")}


def test_clip_in_two_test_sets_is_a_problem(dfew):
    (dfew / SPLIT / "set_2.csv").write_text("video_name,label\n15,3\n1,1\n")
    listing = make_adapter("dfew", dfew).list_videos()
    assert [e.fold for e in listing.entries if e.subject == "00001"] == [1]
    assert ("00001", "duplicate") in {(v, k) for v, k, _ in listing.problems}


def test_csv_without_header_raises(dfew):
    (dfew / SPLIT / "set_3.csv").write_text("120,4\n")
    with pytest.raises(DatasetError, match=r"set_3.csv has columns \['120', '4'\]"):
        make_adapter("dfew", dfew).list_videos()


def test_wrong_root_names_missing_csvs(tmp_path, touch):
    touch(tmp_path / SPLIT / "set_1.csv", "video_name,label\n")
    with pytest.raises(DatasetError) as err:
        make_adapter("dfew", tmp_path).list_videos()
    message = str(err.value)
    assert "set_5.csv" in message and "Clip/original" in message and "set_1.csv" not in message.split("Expected")[0]
