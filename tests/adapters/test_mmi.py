import pytest

from pipeline.adapters import make_adapter
from pipeline.errors import DatasetError

VIDEO_XML = """<?xml version="1.0" encoding="utf-8"?>
<Metatags>
  <Metatag Name="Gender" Value="Male" />
  <Metatag Name="Emotion" Value="{code}" />
</Metatags>
"""
SESSION_XML = ('<?xml version="1.0" encoding="utf-8"?>\n'
               '<session sessionId="{sid}" view="{view}" mediaFile="{stem}.avi"/>\n')


def session(touch, root, sid, stem, view, code=None, session_emotion=None):
    folder = root / "Sessions" / str(sid)
    touch(folder / f"{stem}.avi")
    if code is not None:
        touch(folder / f"{stem}.xml", VIDEO_XML.format(code=code))
    xml = SESSION_XML.format(sid=sid, view=view, stem=stem)
    if session_emotion is not None:  # the other accepted form: Emotion as a session.xml attribute
        xml = xml.replace("<session ", f'<session Emotion="{session_emotion}" ')
    touch(folder / "session.xml", xml)


@pytest.fixture
def mmi(tmp_path, touch):
    session(touch, tmp_path, 1, "S001-001", view=0, code=4)          # happiness, frontal
    session(touch, tmp_path, 2, "S001-002", view=2, code=1)          # anger, dual view
    session(touch, tmp_path, 10, "S002-010", view=1, code=6)         # profile: excluded by default
    session(touch, tmp_path, 11, "S002-011", view=0)                 # no Emotion metatag: unlabelled
    session(touch, tmp_path, 12, "S003-012", view=0, code=7)         # code beyond the 6 basic emotions
    session(touch, tmp_path, 13, "S003-013", view=0, session_emotion=5)  # sadness via session.xml
    (tmp_path / "Sessions" / "14").mkdir()                    # still-image session: no video
    return tmp_path


def test_lists_labels_subjects_and_views(mmi):
    listing = make_adapter("mmi", mmi).list_videos()
    got = {e.video_id: (e.label, e.subject, e.extra) for e in listing.entries}
    assert got == {
        "Sessions/1/S001-001": ("happiness", "S001", {"view": 0}),
        "Sessions/2/S001-002": ("anger", "S001", {"view": 2, "crop": "left"}),
        "Sessions/13/S003-013": ("sadness", "S003", {"view": 0}),
    }
    assert all(e.fold is None for e in listing.entries)  # folds: the head groups by subject
    assert listing.excluded == {"view 1 (profile)": 1, "unlabelled": 1, "emotion code 7 (not 1-6)": 1,
                                "session without video": 1}
    assert listing.problems == []


def test_views_all_and_per_subject_crop(mmi):
    listing = make_adapter("mmi", mmi, options={"views": "all", "dual_crop_subjects": {"S001": "right"}}).list_videos()
    assert len(listing.entries) == 4
    dual = next(e for e in listing.entries if e.extra["view"] == 2)
    assert dual.extra["crop"] == "right"


def test_classes_exclude_and_count(mmi):
    listing = make_adapter("mmi", mmi, classes=("happiness", "sadness")).list_videos()
    assert sorted(e.label for e in listing.entries) == ["happiness", "sadness"]
    assert listing.excluded["class not in classes: anger"] == 1


def test_malformed_xml_is_a_problem(mmi):
    (mmi / "Sessions" / "1" / "S001-001.xml").write_text("<Metatags><Metatag")
    listing = make_adapter("mmi", mmi).list_videos()
    assert [(vid, kind) for vid, kind, _ in listing.problems] == [("Sessions/1/S001-001", "bad_annotation")]
    assert listing.excluded["unlabelled"] == 2


def test_bad_option_raises(mmi):
    with pytest.raises(DatasetError, match="dual_crop: expected left or right, got 'middle'"):
        make_adapter("mmi", mmi, options={"dual_crop": "middle"}).list_videos()


def test_wrong_root_names_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="Sessions") as err:
        make_adapter("mmi", tmp_path).list_videos()
    assert "Expected layout" in str(err.value)
