"""`oulu`: Oulu-CASIA NIR&VIS facial expression database, one camera/illumination subset.

The paper-standard subset is the visible-light camera under strong illumination
(`OriginalImg/VL/Strong`): 80 subjects x 6 expressions = 480 sequences of jpeg frames.
"""
from __future__ import annotations

import re

from pipeline.adapters.base import Adapter, Listing
from pipeline.errors import DatasetError

_SUBJECT = re.compile(r"^P\d{3}$")


class OuluAdapter(Adapter):
    name = "oulu"
    family = "lab"
    known_options = ("images", "camera", "illumination")
    description = "Oulu-CASIA NIR&VIS: posed, 80 subjects x 6 expressions per camera/illumination, 25 fps."
    layout = ("  <root>/OriginalImg/VL/Strong/P001..P080/<Anger|Disgust|Fear|Happiness|Sadness|Surprise>/\n"
              "      000.jpeg, 001.jpeg, ...   frames of one sequence, neutral → peak\n"
              "  options: images (default OriginalImg), camera (VL|NI, default VL),\n"
              "           illumination (Strong|Weak|Dark, default Strong)")
    protocol = "subject-independent 10-fold by subject P### (train-head --folds 10)"

    def list_videos(self) -> Listing:
        subset = "/".join((self.options.get("images", "OriginalImg"), self.options.get("camera", "VL"),
                           self.options.get("illumination", "Strong")))
        self.require(subset)
        subjects = sorted(p for p in (self.root / subset).iterdir() if p.is_dir() and _SUBJECT.match(p.name))
        if not subjects:
            raise DatasetError(f"oulu: no subject folders (P###) under {self.root / subset}.\n"
                               f"Expected layout:\n{self.layout}")
        return self.list_class_folders(subjects)
