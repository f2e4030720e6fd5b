"""`folder`: `<root>/<label>/<video>`; optional `<root>/subjects.csv` (`video,subject`)."""
from __future__ import annotations

import csv

from pipeline.adapters.base import VIDEO_EXTENSIONS, Adapter, Listing, VideoEntry, canonical_label, video_id_for


class FolderAdapter(Adapter):
    name = "folder"
    description = "Any folder of videos sorted into one sub-folder per class."
    layout = ("  <root>/<label>/<video>.mp4   (any depth below the label folder; label folder names\n"
              "                                 are mapped by name: happy → happiness, ...)\n"
              "  <root>/subjects.csv           optional: columns video,subject (video = path relative to\n"
              "                                 root, with or without extension); else one subject per video\n"
              "  Videos directly under <root> are listed unlabelled.")

    def list_videos(self) -> Listing:
        self.require()
        subjects = self._subjects()
        listing = Listing(entries=[])
        for path in sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS):
            vid = video_id_for(path, self.root)
            parts = path.relative_to(self.root).parts
            label = ""
            if len(parts) > 1:
                try:
                    label = canonical_label(parts[0])
                except KeyError:
                    label = parts[0].lower()  # not an emotion name: keep the folder name as the label
            if label and not self.keep(label, listing):
                continue
            subject = subjects.get(vid) or subjects.get(path.relative_to(self.root).as_posix()) or vid
            listing.entries.append(VideoEntry(video_id=vid, path=path, label=label, subject=subject))
        return listing

    def _subjects(self) -> dict[str, str]:
        table = self.root / "subjects.csv"
        if not table.exists():
            return {}
        with table.open(newline="") as f:
            return {row["video"].strip(): row["subject"].strip() for row in csv.DictReader(f)}
