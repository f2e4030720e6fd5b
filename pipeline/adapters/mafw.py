"""`mafw`: MAFW (Liu et al., ACM MM 2022), single-label clips, 11 classes, official 5 folds.

`<split_dir>/single/no_caption/set_k/{train,test}.txt` hold lines `03747.mp4 anger`; a clip's fold
is the set whose test.txt lists it. Frames are read from `data/frames/03747/` (the release's
extracted frames), or the clip itself from `data/clips/03747.mp4` with option frames: false.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.adapters.base import Adapter, Listing, annotation_lines

N_SETS = 5
# The release names the split folder "Train & Test Set"; some copies rename it `split`.
SPLIT_DIRS = ("Train & Test Set", "split")


class MAFWAdapter(Adapter):
    name = "mafw"
    family = "wild"
    known_options = ("frames", "split_dir")
    description = "MAFW: clips in the wild, 11 classes (single-label set), official 5 folds."
    layout = ("  <root>/Train & Test Set/single/no_caption/set_1..5/{train,test}.txt   lines '03747.mp4 anger'\n"
              "        (or <root>/split/single/no_caption/...; option split_dir to name it)\n"
              "  <root>/data/frames/03747/*.jpg   frames (default), or with option frames: false\n"
              "  <root>/data/clips/03747.mp4      the clips")
    protocol = "official 5 folds: fold k = clips of set_k/test.txt (train-head uses fold)"

    def list_videos(self) -> Listing:
        frames = bool(self.options.get("frames", True))
        media = "data/frames" if frames else "data/clips"
        split_dir = self.options.get("split_dir") or next(
            (d for d in SPLIT_DIRS if (self.root / d).is_dir()), SPLIT_DIRS[0])
        lists = [f"{split_dir}/single/no_caption/set_{k}/test.txt" for k in range(1, N_SETS + 1)]
        self.require(media, *lists)
        listing = Listing(entries=[])
        fold_of: dict[str, int] = {}
        for k, rel in enumerate(lists, start=1):
            for number, line, fields in annotation_lines(self.root / rel):
                if len(fields) != 2:
                    listing.problems.append(
                        (fields[0], "bad_annotation", f"{rel}:{number}: expected '<clip>.mp4 <label>', got {line!r}"))
                    continue
                clip = Path(fields[0]).stem.zfill(5)
                path = self.root / media / (clip if frames else f"{clip}{Path(fields[0]).suffix or '.mp4'}")
                self.add_listed(listing, clip, path, fields[1], f"{rel}:{number}", fold=k, seen=fold_of)
        return listing
