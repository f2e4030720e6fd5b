import pytest

from pipeline.adapters import make_adapter
from pipeline.errors import DatasetError


def test_columns_fold_split_apex_and_unknown_label(tmp_path, touch, write_frames):
    touch(tmp_path / "videos/a.mp4")
    write_frames(tmp_path / "frames/b", ["1.png", "2.png"])
    touch(tmp_path / "videos/c.mp4")
    table = touch(tmp_path / "list.csv",
                  "video,label,subject,fold,split,apex_start,apex_end,group\n"
                  "videos/a.mp4,happy,P1,0,train,10,20,twins\n"
                  "frames/b,Fear,P2,1,test,,,\n"
                  "videos/c.mp4,bored,P3,2,,,,\n")
    listing = make_adapter("csv", table).list_videos()
    a, b = listing.entries
    assert (a.video_id, a.label, a.subject, a.fold, a.split, a.apex_start, a.apex_end, a.group) == (
        "videos/a", "happiness", "P1", 0, "train", 10, 20, "twins")
    assert (b.video_id, b.label, b.fold, b.split, b.apex_start, b.group) == ("frames/b", "fear", 1, "test", None, "")
    assert b.path.is_dir()
    assert [(v, k) for v, k, _ in listing.problems] == [("videos/c", "unknown_label")]


def test_missing_columns_and_wrong_root(tmp_path, touch):
    table = touch(tmp_path / "list.csv", "video,label\nx.mp4,happy\n")
    with pytest.raises(DatasetError, match=r"lacks the columns \['subject'\]"):
        make_adapter("csv", table).list_videos()
    with pytest.raises(DatasetError, match="is not a CSV file"):
        make_adapter("csv", tmp_path).list_videos()
