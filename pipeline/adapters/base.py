"""What every dataset adapter provides: a list of `VideoEntry` read from the dataset's own layout.

An adapter is one small module with a class deriving from `Adapter`. It never decodes video
(the manifest stage probes every entry); it only reads the layout and annotation files, maps
labels *by class name* to the canonical vocabulary below, and assigns subjects and folds.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterator

from pipeline.errors import DatasetError
from pipeline.io import ListedVideo
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


@dataclass
class VideoEntry(ListedVideo):
    """One video (a file, or a folder of frames) as an adapter lists it: the manifest's listed columns
    (`pipeline.io.ListedVideo`) plus what only the adapter knows."""

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

    def label_of(self, video_id: str, name: str, to_label: Callable[[str], str] = canonical_label,
                 where: str = "") -> str | None:
        """`name` mapped by `to_label` (the canonical vocabulary unless a dataset numbers its classes), or
        None after recording an `unknown_label` problem: `to_label` raises a KeyError naming the cause."""
        try:
            return to_label(name)
        except KeyError as err:
            self.problems.append((video_id, "unknown_label", f"{where}: {err.args[0]}" if where else str(err.args[0])))
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
    family: ClassVar[str] = ""
    """The kind of clip the dataset holds, naming the `families:` overrides it gets (`lab`: neutral -> apex
    clips, `wild`: held expressions); "": the sections as they stand, best for clips of either kind."""

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

    def add_listed(self, listing: Listing, clip: str, path: Path | None, label: str, where: str, *,
                   fold: int | None = None, split: str | None = None, extra: dict | None = None,
                   to_label: Callable[[str], str] = canonical_label, seen: dict[str, int] | None = None) -> None:
        """One clip named by an annotation list (DFEW, MAFW, FERV39k): listed, or the reason it is not recorded.

        Checked in this order: named again by another fold's list (`seen`, clip → its first fold, for
        datasets whose fold lists partition the clips), media missing (`path` None or absent), label
        unknown to `to_label`, class not chosen. `where` (`file:line`) starts every problem's message.
        These datasets have no subject ids: the clip id stands in (their official splits need none)."""
        if seen is not None:
            if clip in seen:
                listing.problems.append((clip, "duplicate", f"{where}: {clip} is already listed in set_{seen[clip]}"))
                return
            seen[clip] = fold
        if path is None or not path.exists():
            listing.problems.append((clip, "missing", f"{where}: {path or clip} not found"))
            return
        vid = video_id_for(path, self.root)
        canonical = listing.label_of(vid, label, to_label, where)
        if canonical is not None and self.keep(canonical, listing):
            listing.entries.append(VideoEntry(video_id=vid, path=path, label=canonical, subject=clip, fold=fold,
                                              split=split, extra=extra or {}))

    def keep(self, label: str, listing: Listing) -> bool:
        """True when `label` is in the chosen class set; otherwise counts the exclusion."""
        if self.classes is None or label in self.classes:
            return True
        reason = f"class not in classes: {label}"
        listing.excluded[reason] = listing.excluded.get(reason, 0) + 1
        return False


def annotation_lines(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, line, its whitespace-separated fields) for each non-blank line of a plain-text list."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if fields:
            yield number, line, fields


def video_id_for(path: Path, root: Path) -> str:
    """Dataset-relative path without extension, `/`-separated: two `clip.mp4` stay distinct."""
    rel = path.relative_to(root)
    return rel.with_suffix("").as_posix() if rel.suffix.lower() in VIDEO_EXTENSIONS else rel.as_posix()
