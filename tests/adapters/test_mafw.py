import pytest

from pipeline.adapters import make_adapter
from pipeline.errors import DatasetError

SETS = {1: ["03747.mp4 anger", "00012.mp4 helplessness"], 2: ["00007.mp4 neutral"], 3: ["10045.mp4 disappointment"],
        4: ["05000.mp4 contempt"], 5: ["00100.mp4 anxiety", "00200.mp4 happiness"]}


@pytest.fixture
def mafw(tmp_path, touch, write_frames):
    split = tmp_path / "Train & Test Set" / "single" / "no_caption"
    clips = [line.split()[0] for lines in SETS.values() for line in lines]
    for k, lines in SETS.items():
        touch(split / f"set_{k}" / "test.txt", "\n".join(lines) + "\n")
        touch(split / f"set_{k}" / "train.txt", "\n".join(l for j, ls in SETS.items() if j != k for l in ls) + "\n")
    for clip in clips:
        if clip != "00200.mp4":  # listed, frames missing
            write_frames(tmp_path / "data/frames" / clip[:5], ["00001.png", "00002.png"])
        touch(tmp_path / "data/clips" / clip)
    return tmp_path


def test_official_folds_frames(mafw):
    listing = make_adapter("mafw", mafw).list_videos()
    got = {e.subject: (e.label, e.fold) for e in listing.entries}
    assert got == {"03747": ("anger", 1), "00012": ("helplessness", 1), "00007": ("neutral", 2),
                   "10045": ("disappointment", 3), "05000": ("contempt", 4), "00100": ("anxiety", 5)}
    entry = next(e for e in listing.entries if e.subject == "03747")
    assert entry.video_id == "data/frames/03747" and entry.path.is_dir()
    assert [(v, k) for v, k, _ in listing.problems] == [("00200", "missing")]


def test_clips_option_and_split_dir(mafw):
    (mafw / "Train & Test Set").rename(mafw / "split")
    listing = make_adapter("mafw", mafw, options={"frames": False}).list_videos()
    assert len(listing.entries) == 7 and listing.problems == []
    assert next(e for e in listing.entries if e.subject == "00200").video_id == "data/clips/00200"


def test_classes_exclude(mafw):
    listing = make_adapter("mafw", mafw, classes=("anger", "neutral")).list_videos()
    assert sorted(e.label for e in listing.entries) == ["anger", "neutral"]
    assert listing.excluded["class not in classes: helplessness"] == 1


def test_clip_in_two_test_sets_and_bad_line(mafw):
    (mafw / "Train & Test Set/single/no_caption/set_2/test.txt").write_text("00007.mp4 neutral\n03747.mp4 anger\nbroken\n")
    listing = make_adapter("mafw", mafw).list_videos()
    assert [e.fold for e in listing.entries if e.subject == "03747"] == [1]
    assert [(v, k) for v, k, _ in listing.problems] == [("03747", "duplicate"), ("broken", "bad_annotation"),
                                                        ("00200", "missing")]


def test_wrong_root(tmp_path):
    (tmp_path / "data/frames").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no_caption/set_1/test.txt"):
        make_adapter("mafw", tmp_path).list_videos()
