"""`csv`: a CSV with columns `video,label,subject` and optional `fold,split,apex_start,apex_end,group`."""
from __future__ import annotations

import csv
from pathlib import Path

from pipeline.adapters.base import Adapter, Listing, VideoEntry, video_id_for
from pipeline.errors import DatasetError


def _int_or_none(text: str | None) -> int | None:
    return int(float(text)) if text not in (None, "") else None


class CsvAdapter(Adapter):
    name = "csv"
    description = "A CSV listing videos (or frame folders) with their labels and subjects."
    layout = ("  <root> is the CSV file itself, columns: video,label,subject[,fold][,split][,apex_start,apex_end][,group]\n"
              "  video: path relative to the CSV's folder (a file or a folder of frames)\n"
              "  group: videos sharing it never split across folds (related people); default the subject")

    def list_videos(self) -> Listing:
        if not self.root.is_file():
            raise DatasetError(f"csv: {self.root} is not a CSV file.\nExpected layout:\n{self.layout}")
        base = self.root.parent
        listing = Listing(entries=[])
        with self.root.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"video", "label", "subject"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"csv: {self.root} lacks the columns {sorted(missing)} "
                                   f"(has {reader.fieldnames}).\nExpected layout:\n{self.layout}")
            for row in reader:
                path = (base / row["video"].strip()).resolve() if not Path(row["video"]).is_absolute() else Path(row["video"])
                try:
                    vid = video_id_for(path, base.resolve())
                except ValueError:  # outside the CSV's folder: keep the path as given
                    vid = Path(row["video"]).with_suffix("").as_posix()
                label = listing.label_of(vid, row["label"]) if row["label"].strip() else ""
                if label is None:
                    continue
                if label and not self.keep(label, listing):
                    continue
                listing.entries.append(VideoEntry(
                    video_id=vid, path=path, label=label, subject=row["subject"].strip() or vid,
                    fold=_int_or_none(row.get("fold")), split=(row.get("split") or "").strip() or None,
                    apex_start=_int_or_none(row.get("apex_start")), apex_end=_int_or_none(row.get("apex_end")),
                    group=(row.get("group") or "").strip()))
        return listing
