"""`dfew`: Dynamic Facial Expression in-the-Wild (DFEW, Southeast University), official 5 folds.

Labels come from `EmoLabel_DataSplit/test(single-labeled)/set_k.csv` (header `video_name,label`,
video_name an unpadded int): a clip's fold is the set whose *test* csv lists it. DFEW numbers its
classes 1 Happy, 2 Sad, 3 Neutral, 4 Angry, 5 Surprise, 6 Disgust, 7 Fear: not alphabetical, so
they are mapped here by name.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from pipeline.adapters.base import VIDEO_EXTENSIONS, Adapter, Listing
from pipeline.errors import DatasetError

LABEL_CODES = {1: "happiness", 2: "sadness", 3: "neutral", 4: "anger", 5: "surprise", 6: "disgust", 7: "fear"}
N_SETS = 5
SPLIT_DIR = "EmoLabel_DataSplit/test(single-labeled)"


class DFEWAdapter(Adapter):
    name = "dfew"
    family = "wild"
    known_options = ("frames",)
    description = "DFEW: 11,697 single-labelled movie clips in the wild, official 5-fold split."
    layout = ("  <root>/EmoLabel_DataSplit/test(single-labeled)/set_1.csv .. set_5.csv   video_name,label\n"
              "      label: 1 Happy 2 Sad 3 Neutral 4 Angry 5 Surprise 6 Disgust 7 Fear\n"
              "  <root>/Clip/original/00001.mp4                  videos (also found one folder deeper,\n"
              "                                                  e.g. Clip/original/part_1/00001.mp4)\n"
              "  <root>/Clip/clip_224x224/00001/00001_00001.jpg  face frames, read with option frames: true")
    protocol = "official 5 folds: fold k = clips of test(single-labeled)/set_k.csv (train-head uses fold)"

    def list_videos(self) -> Listing:
        frames = bool(self.options.get("frames", False))
        media = "Clip/clip_224x224" if frames else "Clip/original"
        csvs = [f"{SPLIT_DIR}/set_{k}.csv" for k in range(1, N_SETS + 1)]
        self.require(*csvs, media)
        index = _index(self.root / media, dirs=frames)
        listing = Listing(entries=[])
        fold_of: dict[str, int] = {}
        for k, rel in enumerate(csvs, start=1):
            with (self.root / rel).open(newline="") as f:
                reader = csv.DictReader(f)
                if not {"video_name", "label"} <= set(reader.fieldnames or []):
                    raise DatasetError(f"dfew: {self.root / rel} has columns {reader.fieldnames}, "
                                       f"expected video_name,label.\nExpected layout:\n{self.layout}")
                for row in reader:
                    name = row["video_name"].strip().zfill(5)
                    self.add_listed(listing, name, index.get(name, self.root / media / name), row["label"],
                                    f"{rel}:{reader.line_num}", fold=k, to_label=_label, seen=fold_of)
        return listing


def _label(code: str) -> str:
    """DFEW's class number (1-7, as the csv writes it) → canonical name."""
    try:
        return LABEL_CODES[int(float(code))]
    except (KeyError, ValueError):
        raise KeyError(f"label {code!r} not in 1-7") from None


def _index(folder: Path, dirs: bool) -> dict[str, Path]:
    """Clip name (`00001`) → video file or frame folder, at `folder` or one level below it.

    The release is split into zip parts that unpack to `part_1/` ... folders on some copies;
    scanning with os.scandir (no recursion into frame folders) keeps this fast for 12k clips.
    """
    found: dict[str, Path] = {}

    def scan(d: Path, depth: int) -> None:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            name = e.name if dirs else Path(e.name).stem
            if dirs:
                is_clip = e.is_dir() and e.name.isdigit()
            else:
                is_clip = e.is_file() and Path(e.name).suffix.lower() in VIDEO_EXTENSIONS
            if is_clip:
                found.setdefault(name.zfill(5) if name.isdigit() else name, Path(e.path))
            elif e.is_dir() and depth == 0:
                scan(Path(e.path), 1)

    scan(folder, 0)
    return found
