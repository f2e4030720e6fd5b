"""`ckplus`: the Extended Cohn-Kanade dataset (CK+) as shipped (Lucey et al., CVPRW 2010).

Layout read (docs/reference.md §3; checked against public preprocessing code, see docs/datasets.md):
`cohn-kanade-images/S005/001/S005_001_00000001.png` frames running from neutral to the peak, and
for the 327 labelled sequences one `Emotion/S005/001/S005_001_00000011_emotion.txt` holding a
single float (`   3.0000000e+00`); the frame number in its name is the peak frame.
"""
from __future__ import annotations

import re
from pathlib import Path

from pipeline.adapters.base import Adapter, Listing, VideoEntry, video_id_for
from pipeline.frames import sorted_frames

# CK+'s own code order (README of the release): not the canonical order, so map by name.
EMOTION_CODES = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happiness",
                 6: "sadness", 7: "surprise"}
N_FOLDS = 10
_LABEL_FILE = re.compile(r"_(\d+)_emotion\.txt$")


class CKPlusAdapter(Adapter):
    name = "ckplus"
    family = "lab"
    description = "Extended Cohn-Kanade (CK+): posed, 593 sequences of 123 subjects, 327 labelled."
    layout = ("  <root>/cohn-kanade-images/S###/###/S###_###_########.png   frames, neutral → peak\n"
              "  <root>/Emotion/S###/###/S###_###_########_emotion.txt      one float: 0 neutral 1 anger\n"
              "                                      2 contempt 3 disgust 4 fear 5 happy 6 sadness 7 surprise\n"
              "  Sequences without an _emotion.txt are unlabelled and left out (counted).")
    protocol = "subject-independent 10-fold: sorted labelled subject ids dealt into folds (fold = rank % 10)"

    def list_videos(self) -> Listing:
        self.require("cohn-kanade-images", "Emotion")
        images = self.root / "cohn-kanade-images"
        listing = Listing(entries=[])
        labelled: list[tuple[Path, str, str, int | None]] = []  # (folder, subject, label, apex)
        for subject_dir in sorted(p for p in images.iterdir() if p.is_dir()):
            for sequence in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
                vid = video_id_for(sequence, self.root)
                label_dir = self.root / "Emotion" / subject_dir.name / sequence.name
                label_files = sorted(label_dir.glob("*_emotion.txt")) if label_dir.is_dir() else []
                if not label_files:
                    listing.excluded["unlabelled"] = listing.excluded.get("unlabelled", 0) + 1
                    continue
                if len(label_files) > 1:
                    listing.problems.append((vid, "bad_annotation", f"{len(label_files)} label files in {label_dir}"))
                    continue
                try:
                    code = int(float(label_files[0].read_text().split()[0]))
                except (ValueError, IndexError):
                    listing.problems.append((vid, "bad_annotation", f"{label_files[0].name} holds no number"))
                    continue
                if code not in EMOTION_CODES:
                    listing.problems.append((vid, "unknown_label", f"{label_files[0].name}: code {code} not in 0-7"))
                    continue
                labelled.append((sequence, subject_dir.name, EMOTION_CODES[code], _apex(sequence, label_files[0])))
        # Folds are dealt over every labelled subject, before the class filter, so that choosing
        # `classes` (e.g. dropping contempt) never moves a subject to another fold.
        subjects = sorted({subject for _, subject, _, _ in labelled})
        fold_of = {subject: rank % N_FOLDS for rank, subject in enumerate(subjects)}
        for sequence, subject, label, apex in labelled:
            if self.keep(label, listing):
                listing.entries.append(VideoEntry(
                    video_id=video_id_for(sequence, self.root), path=sequence, label=label, subject=subject,
                    fold=fold_of[subject], apex_start=apex, apex_end=apex))
        return listing


def _apex(sequence: Path, label_file: Path) -> int | None:
    """0-based index, among the sequence's sorted frames, of the peak frame the label file names."""
    match = _LABEL_FILE.search(label_file.name)
    if match is None:
        return None
    number = int(match.group(1))
    for index, frame in enumerate(sorted_frames(sequence)):
        digits = re.findall(r"\d+", frame.stem)
        if digits and int(digits[-1]) == number:
            return index
    return None
