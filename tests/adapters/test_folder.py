from pipeline.adapters import make_adapter


def test_same_file_name_in_two_folders_gives_two_ids(tmp_path, touch):
    touch(tmp_path / "happy/a/clip.mp4")
    touch(tmp_path / "happy/b/clip.mp4")
    touch(tmp_path / "Angry/x.avi")
    touch(tmp_path / "loose.mp4")
    touch(tmp_path / "happy/readme.txt")
    listing = make_adapter("folder", tmp_path).list_videos()
    got = {e.video_id: (e.label, e.subject) for e in listing.entries}
    assert got == {"happy/a/clip": ("happiness", "happy/a/clip"), "happy/b/clip": ("happiness", "happy/b/clip"),
                   "Angry/x": ("anger", "Angry/x"), "loose": ("", "loose")}


def test_subjects_csv_and_classes(tmp_path, touch):
    touch(tmp_path / "sad/v1.mp4")
    touch(tmp_path / "sad/v2.mp4")
    touch(tmp_path / "surprise/v3.mp4")
    touch(tmp_path / "subjects.csv", "video,subject\nsad/v1,S1\nsad/v2.mp4,S2\nsurprise/v3,S1\n")
    listing = make_adapter("folder", tmp_path, classes=("sadness",)).list_videos()
    assert {e.video_id: e.subject for e in listing.entries} == {"sad/v1": "S1", "sad/v2": "S2"}
    assert listing.excluded == {"class not in classes: surprise": 1}
