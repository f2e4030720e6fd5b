"""What every dataset adapter provides: a list of `VideoEntry` read from the dataset's own layout.

An adapter is one small module with a class deriving from `Adapter`. It never decodes video
(the manifest stage probes every entry); it only reads the layout and annotation files, maps
labels *by class name* to the canonical vocabulary below, and assigns subjects and folds.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pipeline.errors import DatasetError
from pipeline.labels import DEFAULT_CLASSES

# Canonical class vocabulary (lower case). Datasets map their own names onto these by name,
# never by integer id: the orders differ between datasets (docs/reference.md §3).
CANONICAL = (
    "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral", "contempt",
    # MAFW's extra compound/other classes
    "anxiety", "helplessness", "disappointment",
)

SYNONYMS = {
    "angry": "anger", "an": "anger", "ang": "anger",
    "disgusted": "disgust", "di": "disgust", "dis": "disgust",
    "fearful": "fear", "afraid": "fear", "fe": "fear",
    "happy": "happiness", "joy": "happiness", "ha": "happiness", "hap": "happiness",
    "sad": "sadness", "sa": "sadness",
    "surprised": "surprise", "surprize": "surprise", "su": "surprise", "sur": "surprise",
    "neutral": "neutral", "ne": "neutral", "neu": "neutral",
    "contemptuous": "contempt", "co": "contempt",
    "anxious": "anxiety", "helpless": "helplessness", "disappointed": "disappointment",
}


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def canonical_label(name: str) -> str:
    """Map a dataset's class name to the canonical vocabulary; raises KeyError for an unknown name."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key in CANONICAL:
        return key
    if key in SYNONYMS:
        return SYNONYMS[key]
    raise KeyError(f"unknown class name {name!r}")


@dataclass(frozen=True)
class VideoEntry:
    """One video (a file, or a folder of frames) as an adapter lists it."""

    video_id: str
    """Dataset-relative path without extension (may contain `/`); unique within a dataset."""
    path: Path
    """A video file, or a directory of frames read in sorted order."""
    label: str
    """Canonical class name, or '' when unlabelled (e.g. the `folder` adapter on unsorted videos)."""
    subject: str
    fold: int | None = None
    split: str | None = None
    """`train` / `test` for datasets with a fixed split."""
    apex_start: int | None = None
    apex_end: int | None = None
    """Apex span in original frame numbers, when the dataset annotates it."""
    extra: dict = field(default_factory=dict)
    """Adapter-specific columns kept in the manifest (e.g. MMI `view`)."""


@dataclass
class Listing:
    """An adapter's result: the entries plus what was left out, counted, for the manifest summary."""

    entries: list[VideoEntry]
    excluded: dict[str, int] = field(default_factory=dict)
    """reason → count (e.g. `class not in classes: contempt` → 18, `unlabelled` → 266)."""
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    """(video_id, kind, message) for entries that could not be listed (missing file, unknown label)."""

    def label_of(self, video_id: str, name: str) -> str | None:
        """`name` mapped to the canonical vocabulary, or None after recording an `unknown_label` problem."""
        try:
            return canonical_label(name)
        except KeyError as err:
            self.problems.append((video_id, "unknown_label", str(err.args[0])))
            return None


class Adapter(abc.ABC):
    """Base class. Subclasses set the class attributes and implement `list_videos`."""

    name: ClassVar[str]
    description: ClassVar[str]
    layout: ClassVar[str]
    """The layout this adapter reads, shown by `pipeline datasets` and in errors."""
    default_classes: ClassVar[tuple[str, ...] | None] = None
    """Taken from `pipeline.labels.DEFAULT_CLASSES` by `name` (see `__init_subclass__`)."""
    protocol: ClassVar[str] = "subject-independent k-fold (train-head --folds)"
    known_options: ClassVar[tuple[str, ...]] = ()
    """Keys accepted in `datasets.<D>.options`; anything else is a misspelling and is refused."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls) and "default_classes" not in vars(cls):
            cls.default_classes = DEFAULT_CLASSES.get(cls.name)

    def __init__(self, root: Path, classes: tuple[str, ...] | None = None, fps: float = 25.0,
                 options: dict | None = None):
        self.root = Path(root)
        self.classes = tuple(classes) if classes else self.default_classes
        self.fps = fps
        self.options = dict(options or {})
        unknown = sorted(set(self.options) - set(self.known_options))
        if unknown:
            raise DatasetError(f"{self.name}: unknown option(s) {unknown} in datasets.<name>.options "
                               f"(known: {', '.join(self.known_options) or 'none'})")

    @abc.abstractmethod
    def list_videos(self) -> Listing:
        """Read the layout; raise `DatasetError` (via `require`) when the root does not match it."""

    # ---------------------------------------------------------------- helpers for subclasses

    def require(self, *relative: str | Path) -> None:
        """Raise one DatasetError naming every expected path that is missing, and the layout."""
        if not self.root.exists():
            raise DatasetError(f"{self.name}: dataset root {self.root} does not exist.\n"
                               f"Expected layout:\n{self.layout}")
        missing = [str(self.root / r) for r in relative if not (self.root / r).exists()]
        if missing:
            raise DatasetError(f"{self.name}: under {self.root} these were expected and not found:\n  "
                               + "\n  ".join(missing) + f"\nExpected layout:\n{self.layout}")

    def list_class_folders(self, subjects: list[Path]) -> Listing:
        """`<subject>/<Class>/` frame folders (BU-4DFE, Oulu): one video per class folder, labelled by name."""
        listing = Listing(entries=[])
        for subject in subjects:
            for sequence in sorted(p for p in subject.iterdir() if p.is_dir()):
                vid = video_id_for(sequence, self.root)
                label = listing.label_of(vid, sequence.name)
                if label is None:
                    continue
                if self.keep(label, listing):
                    listing.entries.append(VideoEntry(video_id=vid, path=sequence, label=label, subject=subject.name))
        return listing

    def keep(self, label: str, listing: Listing) -> bool:
        """True when `label` is in the chosen class set; otherwise counts the exclusion."""
        if self.classes is None or label in self.classes:
            return True
        reason = f"class not in classes: {label}"
        listing.excluded[reason] = listing.excluded.get(reason, 0) + 1
        return False


def video_id_for(path: Path, root: Path) -> str:
    """Dataset-relative path without extension, `/`-separated: two `clip.mp4` stay distinct."""
    rel = path.relative_to(root)
    return rel.with_suffix("").as_posix() if rel.suffix.lower() in VIDEO_EXTENSIONS else rel.as_posix()
