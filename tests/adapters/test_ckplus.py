import pytest

from pipeline.adapters import make_adapter
from pipeline.errors import DatasetError


def sequence(touch, write_frames, root, subject, seq, n_frames, code=None):
    names = [f"{subject}_{seq}_{i:08d}.png" for i in range(1, n_frames + 1)]
    write_frames(root / "cohn-kanade-images" / subject / seq, names)
    if code is not None:  # the release's format: one float, scientific notation, leading spaces
        touch(root / "Emotion" / subject / seq / f"{subject}_{seq}_{n_frames:08d}_emotion.txt",
              f"   {code:.7e}\n")


@pytest.fixture
def ckplus(tmp_path, touch, write_frames):
    sequence(touch, write_frames, tmp_path, "S005", "001", 3, code=3)    # disgust
    sequence(touch, write_frames, tmp_path, "S010", "002", 2, code=2)    # contempt
    sequence(touch, write_frames, tmp_path, "S010", "004", 3, code=None) # unlabelled: skipped, counted
    sequence(touch, write_frames, tmp_path, "S011", "001", 2, code=0)    # neutral: not in the 7 default classes
    for i in range(12, 24):                          # enough subjects to wrap the 10 folds
        sequence(touch, write_frames, tmp_path, f"S{i:03d}", "001", 2, code=5)
    (tmp_path / "Emotion" / "S010" / "004").mkdir(parents=True)  # label folder without a file
    return tmp_path


def test_labels_subjects_folds_apex(ckplus):
    listing = make_adapter("ckplus", ckplus).list_videos()
    by_id = {e.video_id: e for e in listing.entries}
    assert len(listing.entries) == 2 + 12
    disgust = by_id["cohn-kanade-images/S005/001"]
    assert (disgust.label, disgust.subject, disgust.fold) == ("disgust", "S005", 0)
    assert disgust.path.is_dir()
    assert (disgust.apex_start, disgust.apex_end) == (2, 2)  # peak = last of 3 frames, 0-based
    assert by_id["cohn-kanade-images/S010/002"].label == "contempt"
    # sorted labelled subjects S005, S010, S011, S012..S023 dealt into 10 folds
    assert by_id["cohn-kanade-images/S012/001"].fold == 3
    assert by_id["cohn-kanade-images/S021/001"].fold == 2 and by_id["cohn-kanade-images/S022/001"].fold == 3
    assert listing.excluded == {"unlabelled": 1, "class not in classes: neutral": 1}
    assert listing.problems == []


def test_eight_classes_include_neutral_and_keep_folds(ckplus):
    seven = {e.video_id: e.fold for e in make_adapter("ckplus", ckplus).list_videos().entries}
    classes = ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
    listing = make_adapter("ckplus", ckplus, classes=classes).list_videos()
    assert len(listing.entries) == 15
    assert {e.video_id: e.fold for e in listing.entries if e.video_id in seven} == seven


def test_bad_label_file_is_a_problem(ckplus):
    (ckplus / "Emotion/S005/001/S005_001_00000003_emotion.txt").write_text("   9.0000000e+00\n")
    listing = make_adapter("ckplus", ckplus).list_videos()
    assert [(v, k) for v, k, _ in listing.problems] == [("cohn-kanade-images/S005/001", "unknown_label")]


def test_wrong_root_names_missing_path(tmp_path):
    (tmp_path / "cohn-kanade-images").mkdir()
    with pytest.raises(DatasetError, match=r"Emotion") as err:
        make_adapter("ckplus", tmp_path).list_videos()
    assert "cohn-kanade-images" not in str(err.value).split("Expected layout")[0]
