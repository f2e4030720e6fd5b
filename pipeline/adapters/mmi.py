"""`mmi`: the MMI Facial Expression Database as shipped (iBUG, Imperial College London).

Layout read (docs/reference.md §3; checked against a public preprocessing script, see docs/datasets.md):
one folder per recording session under `Sessions/`, holding the video `S###-###.avi`, its
annotation `S###-###.xml` whose `<Metatag Name="Emotion" Value="4"/>` holds the emotion code,
and `session.xml` whose `view` attribute says how the camera saw the face.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from pipeline.adapters.base import VIDEO_EXTENSIONS, Adapter, Listing, VideoEntry, video_id_for
from pipeline.errors import DatasetError

# MMI's emotion codes (the database's own annotation scheme; codes above 6 are not basic emotions).
EMOTION_CODES = {1: "anger", 2: "disgust", 3: "fear", 4: "happiness", 5: "sadness", 6: "surprise"}
VIEWS = {0: "frontal", 1: "profile", 2: "dual"}
_SUBJECT = re.compile(r"^(S\d{3})-\d+$")


def _attr(element: ET.Element, name: str) -> str | None:
    """An attribute looked up case-insensitively (`Name`/`name`): both spellings occur in XML exports."""
    for key, value in element.attrib.items():
        if key.lower() == name:
            return value
    return None


def emotion_code(*xml_roots: ET.Element) -> int | None:
    """The Emotion code from the first root that has one.

    Two forms are accepted: a `<Metatag Name="Emotion" Value="4"/>` element anywhere below the root
    (the per-video `S###-###.xml`, verified), or an `Emotion="4"` attribute on the root (a
    `session.xml` variant some copies carry; assumed).
    """
    for root in xml_roots:
        for element in root.iter():
            if element.tag.lower() == "metatag" and (_attr(element, "name") or "").lower() == "emotion":
                return int(float(_attr(element, "value") or ""))
        direct = _attr(root, "emotion")
        if direct is not None:
            return int(float(direct))
    return None


def view_of(root: ET.Element) -> int | None:
    """The `view` attribute of `session.xml` (on the root, or on the first element carrying one)."""
    for element in root.iter():
        value = _attr(element, "view")
        if value is not None:
            return int(value)
    return None


class MMIAdapter(Adapter):
    name = "mmi"
    family = "lab"
    known_options = ("views", "dual_crop", "dual_crop_subjects")
    description = "MMI Facial Expression Database (iBUG, Imperial College London): posed, 25 fps, 720x576."
    layout = ("  <root>/Sessions/<session>/S###-###.avi   the recording (S### = subject)\n"
              "  <root>/Sessions/<session>/S###-###.xml   <Metatag Name=\"Emotion\" Value=\"1..6\"/>:\n"
              "                                           1 anger 2 disgust 3 fear 4 happiness 5 sadness 6 surprise\n"
              "  <root>/Sessions/<session>/session.xml    view=\"0\" frontal, \"1\" profile, \"2\" dual (both halves)\n"
              "  options: views (default [0, 2], or 'all'), dual_crop (left|right, default left),\n"
              "           dual_crop_subjects ({S001: right, ...} per-subject side of the frontal half)")
    protocol = "subject-independent 10-fold by subject S### (train-head --folds 10)"

    def list_videos(self) -> Listing:
        self.require("Sessions")
        views, crop, crop_by_subject = self._view_options()
        listing = Listing(entries=[])
        sessions = sorted((p for p in (self.root / "Sessions").iterdir() if p.is_dir()), key=_natural)
        for session in sessions:
            videos = sorted(p for p in session.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
            if not videos:  # MMI also ships still-image sessions (no video): not usable here
                _count(listing, "session without video")
                continue
            session_root = _parse(session / "session.xml", listing, video_id_for(session, self.root))
            for video in videos:
                self._add(video, session_root, views, crop, crop_by_subject, listing)
        return listing

    def _add(self, video: Path, session_root: ET.Element | None, views: set[int] | None, crop: str,
             crop_by_subject: dict[str, str], listing: Listing) -> None:
        vid = video_id_for(video, self.root)
        match = _SUBJECT.match(video.stem)
        if match is None:
            listing.problems.append((vid, "bad_name", f"{video.name} is not named S###-###"))
            return
        subject = match.group(1)
        video_root = _parse(video.with_suffix(".xml"), listing, vid)
        roots = [r for r in (video_root, session_root) if r is not None]
        try:
            code = emotion_code(*roots)
        except ValueError as err:
            listing.problems.append((vid, "bad_annotation", f"Emotion value is not a number: {err}"))
            return
        if code is None:
            _count(listing, "unlabelled")
            return
        if code not in EMOTION_CODES:
            _count(listing, f"emotion code {code} (not 1-6)")
            return
        view = view_of(session_root) if session_root is not None else None
        if views is not None and view not in views:
            _count(listing, "view unknown" if view is None else f"view {view} ({VIEWS.get(view, '?')})")
            return
        label = EMOTION_CODES[code]
        if not self.keep(label, listing):
            return
        extra: dict = {"view": view}
        if view == 2:  # dual view: the frame holds frontal and profile side by side; keep one half
            extra["crop"] = crop_by_subject.get(subject, crop)
        listing.entries.append(VideoEntry(video_id=vid, path=video, label=label, subject=subject, extra=extra))

    def _view_options(self) -> tuple[set[int] | None, str, dict[str, str]]:
        views = self.options.get("views", [0, 2])
        crop = self.options.get("dual_crop", "left")
        by_subject = dict(self.options.get("dual_crop_subjects") or {})
        problems = []
        if views != "all" and not (isinstance(views, (list, tuple)) and all(v in VIEWS for v in views)):
            problems.append(f"views: expected a list drawn from 0, 1, 2 or 'all', got {views!r}")
        for key, side in [("dual_crop", crop), *((f"dual_crop_subjects.{s}", c) for s, c in by_subject.items())]:
            if side not in ("left", "right"):
                problems.append(f"{key}: expected left or right, got {side!r}")
        if problems:
            raise DatasetError("mmi: invalid options:\n  " + "\n  ".join(problems))
        return (None if views == "all" else set(views)), crop, by_subject


def _parse(path: Path, listing: Listing, vid: str) -> ET.Element | None:
    """The XML root, or None when the file is absent; a malformed file is recorded as a problem."""
    if not path.exists():
        return None
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as err:
        listing.problems.append((vid, "bad_annotation", f"{path.name}: {err}"))
        return None


def _count(listing: Listing, reason: str) -> None:
    listing.excluded[reason] = listing.excluded.get(reason, 0) + 1


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]
