import pytest

from pipeline.adapters.demo import DemoAdapter


@pytest.mark.slow
def test_changed_options_regenerate_the_videos(tmp_path):
    small = {"videos_per_class_per_identity": 1, "n_frames": [50, 52], "size": 128, "identities": 4}
    first = DemoAdapter(tmp_path, options=small).list_videos()
    assert len(first.entries) == 24 == DemoAdapter(tmp_path, options=small).size()[0]
    again = DemoAdapter(tmp_path, options=small).list_videos()  # same settings: read back, not regenerated
    assert [e.video_id for e in again.entries] == [e.video_id for e in first.entries]
    more = DemoAdapter(tmp_path, options={**small, "videos_per_class_per_identity": 2}).list_videos()
    assert len(more.entries) == 48 and all(e.path.exists() for e in more.entries)
    fewer = DemoAdapter(tmp_path, options=small).list_videos()
    assert len(fewer.entries) == 24 and len(list(tmp_path.glob("*/*.mp4"))) == 24  # no stale videos left
