"""`bu4dfe`: BU-4DFE (Binghamton University 3D dynamic facial expressions) 2-D texture frames.

The CEFLNet paper calls this dataset "BU-3DFE" (606 sequences, 101 subjects, 25 fps, docs/reference.md §1);
it is BU-4DFE, so `bu3dfe` is registered as an alias. Each sequence folder holds one `.wrl` mesh and
one texture image per frame (`000.jpg`, ...); the texture images are read as a video.
"""
from __future__ import annotations

import re

from pipeline.adapters.base import Adapter, Listing
from pipeline.errors import DatasetError

_SUBJECT = re.compile(r"^[FM]\d{3}$")


class BU4DFEAdapter(Adapter):
    name = "bu4dfe"
    family = "lab"
    description = "BU-4DFE (Binghamton): posed 3-D dynamic expressions, 101 subjects x 6, 25 fps (paper: 'BU-3DFE')."
    layout = ("  <root>/<F001..F058, M001..M043>/<Angry|Disgust|Fear|Happy|Sad|Surprise>/000.jpg, 001.jpg, ...\n"
              "  (2-D texture frames beside the .wrl meshes; the expression folder is one video)")
    protocol = "subject-independent 10-fold by subject F###/M### (train-head --folds 10)"

    def list_videos(self) -> Listing:
        self.require()
        subjects = sorted(p for p in self.root.iterdir() if p.is_dir() and _SUBJECT.match(p.name))
        if not subjects:
            raise DatasetError(f"bu4dfe: no subject folders (F###, M###) under {self.root}.\n"
                               f"Expected layout:\n{self.layout}")
        return self.list_class_folders(subjects)
