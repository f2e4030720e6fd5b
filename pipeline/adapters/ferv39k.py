"""`ferv39k`: FERV39k (Wang et al., CVPR 2022), the fixed train/test split over all 22 scenes.

`4_setups/All_scenes/{train_All,test_All}.csv` are space-separated lines `Action/Sad/0010 Sad`
with no header; each names a face-crop clip folder `2_ClipsforFaceCrop/Action/Sad/0010/` of jpg
frames. The label is taken from the Emotion component of that path, as the release organises it.
"""
from __future__ import annotations

from pipeline.adapters.base import Adapter, Listing, annotation_lines, video_id_for

LISTS = (("train", "train_All.csv"), ("test", "test_All.csv"))


class FERV39kAdapter(Adapter):
    name = "ferv39k"
    family = "wild"
    known_options = ("clips_dir", "setups_dir")
    description = "FERV39k: 38,935 clips in the wild over 22 scenes, fixed train/test split (31,088 / 7,847)."
    layout = ("  <root>/4_setups/All_scenes/train_All.csv, test_All.csv   lines 'Scene/Emotion/ID Label', no header\n"
              "  <root>/2_ClipsforFaceCrop/<Scene>/<Emotion>/<ID>/*.jpg     face-crop frames of one clip\n"
              "  options: clips_dir (default 2_ClipsforFaceCrop), setups_dir (default 4_setups/All_scenes)")
    protocol = "fixed split: train_All → train, test_All → test (train-head uses split)"

    def list_videos(self) -> Listing:
        clips = self.options.get("clips_dir", "2_ClipsforFaceCrop")
        setups = self.options.get("setups_dir", "4_setups/All_scenes")
        self.require(clips, *(f"{setups}/{name}" for _, name in LISTS))
        listing = Listing(entries=[])
        for split, name in LISTS:
            for number, line, fields in annotation_lines(self.root / setups / name):
                clip = fields[0].strip("/")
                parts = clip.split("/")
                if len(parts) != 3:
                    listing.problems.append(
                        (clip, "bad_annotation", f"{name}:{number}: expected 'Scene/Emotion/ID Label', got {line!r}"))
                    continue
                path = self.root / clips / clip
                if len(fields) > 1 and fields[1].lower() != parts[1].lower():
                    vid = video_id_for(path, self.root)
                    listing.problems.append(
                        (vid, "label_mismatch", f"{name}:{number}: folder {parts[1]}, label {fields[1]}"))
                    continue
                # The label is the Emotion folder's name, as the release organises the clips.
                self.add_listed(listing, clip, path, parts[1], f"{name}:{number}", split=split,
                                extra={"scene": parts[0]})
        return listing
