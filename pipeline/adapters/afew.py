"""`afew`: Acted Facial Expressions in the Wild (AFEW 7/8, the EmotiW challenge release).

Train and Val come as `Train_AFEW.zip` / `Val_AFEW.zip`, one folder per class of `.avi` movie
excerpts; the Test set has no public labels and is not listed. Protocol: train on Train, report
on Val (773 / 383 videos).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.adapters.base import VIDEO_EXTENSIONS, Adapter, Listing, VideoEntry, canonical_label, video_id_for
from pipeline.errors import DatasetError

# (split, folder names as unzipped from the EmotiW release, or renamed by hand)
SPLITS = (("train", ("Train_AFEW", "Train")), ("test", ("Val_AFEW", "Val")))


class AFEWAdapter(Adapter):
    name = "afew"
    family = "wild"
    description = "AFEW 7/8 (EmotiW): movie excerpts in the wild; Train 773, Val 383 videos."
    layout = ("  <root>/Train_AFEW/<Angry|Disgust|Fear|Happy|Neutral|Sad|Surprise>/<id>.avi   (or Train/)\n"
              "  <root>/Val_AFEW/<class>/<id>.avi                                             (or Val/)\n"
              "  Train → split train, Val → split test. Folders that are not class names\n"
              "  (e.g. AlignedFaces_LBPTOP_Points) are not read.")
    protocol = "fixed split: train on Train, test on Val (train-head uses split)"

    def list_videos(self) -> Listing:
        self.require()
        listing = Listing(entries=[])
        for split, names in SPLITS:
            folder = next((self.root / n for n in names if (self.root / n).is_dir()), None)
            if folder is None:
                raise DatasetError(f"afew: under {self.root} none of {', '.join(names)} was found.\n"
                                   f"Expected layout:\n{self.layout}")
            self._add_split(folder, split, listing)
        return listing

    def _add_split(self, folder: Path, split: str, listing: Listing) -> None:
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                label = canonical_label(class_dir.name)
            except KeyError:
                continue  # the EmotiW zips carry face-crop and landmark folders beside the class folders
            for video in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS):
                if self.keep(label, listing):
                    # No subject ids exist in AFEW: the clip id stands in (a fixed split needs none).
                    listing.entries.append(VideoEntry(video_id=video_id_for(video, self.root), path=video,
                                                      label=label, subject=video.stem, split=split))
