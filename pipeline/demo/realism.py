"""Do generated expressions read as themselves to a model trained on real faces? (issue 31)

For every video of a generated set (`labels.csv` as `generate_demo` writes it) the FER2013
mini-Xception (`pipeline.demo.fer2013`) reads up to 8 apex frames and up to 8 neutral frames
(outside the expression episode), each cropped around the project's own RetinaFace box the way
fer crops. Two readings per video, over the 6 expression classes only:

- *6-way apex*: argmax of the mean apex probabilities;
- *baseline-corrected*: argmax of (mean apex - mean neutral) probabilities, so that a face which
  already looks happy at rest is judged by what the expression changed (videos without neutral
  frames, e.g. the sustained flavour from frame 0, count only for the 6-way reading).

Per subject, the mean neutral-frame probabilities over all 7 classes: a subject whose neutral frames
do not read `neutral` is flagged (its "neutral" is not neutral). A gate for the rig, never a
training signal.

    python -m pipeline.demo.realism ROOT [--out report.md] [--max-videos N]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.demo.fer2013 import CLASS_NAMES, face_crop, pad_grey, predict
from pipeline.errors import DatasetError, PipelineError, VideoError

EXPRESSIONS = CLASS_NAMES[:6]
"""The six classes a generated video can be (`generate.CLASSES`), in the model's order."""
APEX_SAMPLES = 8
NEUTRAL_SAMPLES = 8
THREADS = 1
"""Threads for the detector and the model. One each: on a shared 2-core machine 36 videos took 4.5 s of
CPU (8-10 s wall) with one thread, 16 s of CPU (38 s wall) with two (waiting threads spin)."""
REQUIRED = ("video", "label", "subject", "apex_start", "apex_end")
OPTIONAL = ("episode_start", "episode_end", "n_frames")


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class LabelRow:
    video: str
    label: str
    subject: str
    apex: tuple[int, int]
    episode: tuple[int, int] | None
    n_frames: int | None

    def neutral_frames(self) -> list[int]:
        """Frames outside the episode; none when labels.csv does not say where the episode is."""
        if self.episode is None:
            return []
        after = range(self.episode[1] + 1, self.n_frames) if self.n_frames is not None else range(0)
        return [*range(0, self.episode[0]), *after]


@dataclass(frozen=True)
class VideoReading:
    video: str
    label: str
    subject: str
    apex_probs: tuple[float, ...]
    """Mean over the apex frames read, 7 values in `CLASS_NAMES` order."""
    neutral_probs: tuple[float, ...] | None
    n_apex: int
    n_neutral: int

    @property
    def six_way(self) -> str:
        return EXPRESSIONS[int(np.argmax(self.apex_probs[:6]))]

    @property
    def corrected(self) -> str | None:
        if self.neutral_probs is None:
            return None
        return EXPRESSIONS[int(np.argmax(np.subtract(self.apex_probs, self.neutral_probs)[:6]))]


@dataclass(frozen=True)
class ReadingFailure:
    video: str
    kind: str
    message: str


@dataclass(frozen=True)
class ClassScore:
    label: str
    n: int
    six_way: float | None
    n_corrected: int
    corrected: float | None


@dataclass(frozen=True)
class SubjectNeutral:
    subject: str
    n_videos: int
    """Videos of the subject with neutral frames read."""
    probs: tuple[float, ...] | None
    reads: str | None
    flagged: bool


@dataclass
class RealismReport:
    root: str
    per_class: list[ClassScore]
    per_class_neutral: list[ClassScore]
    """The same on the videos of subjects whose neutral frames read neutral (the issue's target is set
    there: a face that smiles at rest cannot show the other classes from a neutral start)."""
    six_way: float | None
    corrected: float | None
    n_videos: int
    n_corrected: int
    confusion: list[list[int]]
    """(6, 6) counts, rows the intended class, columns the 6-way apex reading (`EXPRESSIONS` order)."""
    confusion_corrected: list[list[int]]
    subjects: list[SubjectNeutral]
    videos: list[VideoReading]
    failures: list[ReadingFailure]
    seconds: float = 0.0

    @property
    def flagged(self) -> list[str]:
        return [s.subject for s in self.subjects if s.flagged]

    def per_subject(self) -> dict[str, dict[str, tuple[int, int]]]:
        """subject -> class -> (its videos the 6-way apex reading reads as intended, its videos): a rig can fail
        on a few faces rather than on a class everywhere (docs/realism.md)."""
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for v in self.videos:
            hits, n = out.setdefault(v.subject, {}).get(v.label, (0, 0))
            out[v.subject][v.label] = (hits + (v.six_way == v.label), n + 1)
        return out

    def to_json(self) -> str:
        out = asdict(self)
        out["flagged"] = self.flagged
        out["classes"] = list(EXPRESSIONS)
        return json.dumps(out, indent=1)

    def format(self, short: bool = False) -> str:
        """A text table; `short` keeps the per-class block, the overall line and the flagged subjects."""
        f = lambda v: "  -  " if v is None else f"{v:5.2f}"  # noqa: E731
        lines = [f"realism check (FER2013 mini-Xception of fer 25.10.3, real faces): {self.n_videos} videos "
                 f"read, {len(self.failures)} failed, {self.seconds:.0f} s",
                 f"{'class':<11} {'n':>4}  {'6-way apex':>10}  {'baseline-corrected':>18}   "
                 f"{'neutral faces: n':>16}  {'6-way':>5}  {'corrected':>9}"]
        for c, cn in zip(self.per_class, self.per_class_neutral):
            lines.append(f"{c.label:<11} {c.n:>4}  {f(c.six_way):>10}  {f(c.corrected):>18}   "
                         f"{cn.n:>16}  {f(cn.six_way):>5}  {f(cn.corrected):>9}")
        lines.append(f"{'all':<11} {self.n_videos:>4}  {f(self.six_way):>10}  {f(self.corrected):>18}"
                     f"   (chance {1 / 6:.2f}; corrected over {self.n_corrected} videos with neutral frames)")
        if self.n_videos and not self.n_corrected:
            lines.append("no video has neutral frames (sustained flavour?): only the 6-way apex reading applies")
        if not short:
            for title, table in (("6-way apex", self.confusion), ("baseline-corrected", self.confusion_corrected)):
                lines += ["", f"confusion, {title} (rows intended, columns read):",
                          " " * 11 + "".join(f"{c[:3]:>5}" for c in EXPRESSIONS)]
                lines += [f"{c:<11}" + "".join(f"{v:>5}" for v in row) for c, row in zip(EXPRESSIONS, table)]
            lines += ["", "neutral frames per subject (mean probabilities):",
                      f"{'subject':<11}" + "".join(f"{c[:3]:>6}" for c in CLASS_NAMES) + "  reads"]
            for s in self.subjects:
                probs = "".join(f"{p:6.2f}" for p in s.probs) if s.probs else f"{'(no neutral frames)':>42}"
                lines.append(f"{s.subject:<11}{probs}  {s.reads or '-'}{'  FLAGGED' if s.flagged else ''}")
            lines += ["", "6-way apex read as intended, per subject (videos):",
                      f"{'subject':<11}" + "".join(f"{c[:3]:>6}" for c in EXPRESSIONS)]
            for subject, by_class in self.per_subject().items():
                cells = [f"{by_class[c][0]}/{by_class[c][1]}" if c in by_class else "-" for c in EXPRESSIONS]
                lines.append(f"{subject:<11}" + "".join(f"{c:>6}" for c in cells))
        with_neutral = [s for s in self.subjects if s.probs is not None]
        lines.append(f"subjects whose neutral frames read as an expression: {len(self.flagged)} of {len(with_neutral)}"
                     + (f" ({', '.join(f'{s.subject}: {s.reads}' for s in self.subjects if s.flagged)})"
                        if self.flagged else ""))
        for fail in self.failures[:5]:
            lines.append(f"failed: {fail.video}: {fail.kind}: {fail.message}")
        return "\n".join(lines)


# ------------------------------------------------------------------ summarising readings


def _accuracy(hits: list[bool]) -> float | None:
    return float(np.mean(hits)) if hits else None


def _confusion(pairs: list[tuple[str, str]]) -> list[list[int]]:
    m = np.zeros((6, 6), int)
    for intended, read in pairs:
        m[EXPRESSIONS.index(intended), EXPRESSIONS.index(read)] += 1
    return m.tolist()


def _per_class(videos: list[VideoReading]) -> list[ClassScore]:
    out = []
    for c in EXPRESSIONS:
        mine = [v for v in videos if v.label == c]
        corr = [v for v in mine if v.corrected is not None]
        out.append(ClassScore(c, len(mine), _accuracy([v.six_way == c for v in mine]), len(corr),
                              _accuracy([v.corrected == c for v in corr])))
    return out


def summarise(videos: list[VideoReading], failures: list[ReadingFailure], root: str = "",
              seconds: float = 0.0) -> RealismReport:
    """The report of per-video readings (pure: no model, no files)."""
    with_neutral = [v for v in videos if v.corrected is not None]
    subjects = []
    for s in dict.fromkeys(v.subject for v in videos):
        neutral = [v.neutral_probs for v in videos if v.subject == s and v.neutral_probs is not None]
        probs = tuple(float(p) for p in np.mean(neutral, 0)) if neutral else None
        reads = CLASS_NAMES[int(np.argmax(probs))] if probs else None
        subjects.append(SubjectNeutral(s, len(neutral), probs, reads, reads not in (None, "neutral")))
    flagged = {s.subject for s in subjects if s.flagged}
    return RealismReport(
        root=root, per_class=_per_class(videos),
        per_class_neutral=_per_class([v for v in videos if v.subject not in flagged]),
        six_way=_accuracy([v.six_way == v.label for v in videos]),
        corrected=_accuracy([v.corrected == v.label for v in with_neutral]),
        n_videos=len(videos), n_corrected=len(with_neutral),
        confusion=_confusion([(v.label, v.six_way) for v in videos]),
        confusion_corrected=_confusion([(v.label, v.corrected) for v in with_neutral]),
        subjects=subjects, videos=videos, failures=failures, seconds=seconds)


# ------------------------------------------------------------------ reading labels.csv


def _int(row: dict, key: str, where: str, problems: list[str]) -> int | None:
    try:
        return int(row[key])
    except (TypeError, ValueError):
        problems.append(f"{where}: {key} must be an integer, got {row.get(key)!r}")
        return None


def read_labels(root: Path) -> list[LabelRow]:
    """The rows of `<root>/labels.csv`; every problem reported at once (DatasetError)."""
    path = Path(root) / "labels.csv"
    if not path.is_file():
        raise DatasetError(f"realism: {path} not found; ROOT must be a generated set's folder (the one holding "
                           "labels.csv, e.g. data/demo/raw after `pipeline demo`)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"realism: {path} lacks columns {missing} (has {reader.fieldnames})")
        raw = list(reader)
    rows, problems = [], []
    for n, r in enumerate(raw, start=2):
        where = f"{path.name} line {n}"
        if r["label"] not in EXPRESSIONS:
            problems.append(f"{where}: label {r['label']!r} is not one of {', '.join(EXPRESSIONS)}")
        apex = (_int(r, "apex_start", where, problems), _int(r, "apex_end", where, problems))
        has_episode = all(r.get(k) not in (None, "") for k in ("episode_start", "episode_end"))
        episode = ((_int(r, "episode_start", where, problems), _int(r, "episode_end", where, problems))
                   if has_episode else None)
        n_frames = _int(r, "n_frames", where, problems) if r.get("n_frames") not in (None, "") else None
        if None not in apex and not 0 <= apex[0] <= apex[1]:
            problems.append(f"{where}: apex {apex[0]}..{apex[1]} is not a span of frames")
        rows.append(LabelRow(r["video"], r["label"], r["subject"], apex, episode, n_frames))
    if problems:
        raise DatasetError("realism: labels.csv has problems:\n" + "\n".join(f"  - {p}" for p in problems[:20]))
    if not rows:
        raise DatasetError(f"realism: {path} lists no videos")
    return rows


def spread(indices: Sequence[int], k: int) -> list[int]:
    """Up to `k` of `indices`, evenly spaced, first and last included."""
    if len(indices) <= k:
        return list(indices)
    return [indices[p] for p in np.linspace(0, len(indices) - 1, k).round().astype(int)]


def interleave(rows: list[LabelRow]) -> list[LabelRow]:
    """Rows ordered so that any prefix spreads over classes and, within a class, over subjects."""
    def rounds(items: list, key) -> list:
        groups: dict = {}
        for it in items:
            groups.setdefault(key(it), []).append(it)
        return [g[i] for i in range(max(map(len, groups.values()))) for g in groups.values() if i < len(g)]
    per_class = {c: rounds([r for r in rows if r.label == c], lambda r: r.subject) for c in EXPRESSIONS}
    return [g[i] for i in range(max(map(len, per_class.values()))) for g in per_class.values() if i < len(g)]


# ------------------------------------------------------------------ faces and readings


def default_detector(threads: int = THREADS):
    from pipeline.detector import RetinaFaceDetector

    return RetinaFaceDetector(device="cpu", min_face=20, threads=threads)


def _predict(crops: list[np.ndarray], threads: int) -> np.ndarray:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return predict(crops)
    finally:
        torch.set_num_threads(before)


def largest_face_crops(frames_rgb: Sequence[np.ndarray], detector) -> list[np.ndarray | None]:
    """fer's (64, 64) grey crop around each frame's largest RetinaFace box; None where no face."""
    crops: list[np.ndarray | None] = []
    for frame, det in zip(frames_rgb, detector.detect(frames_rgb)):
        if not len(det):
            crops.append(None)
            continue
        area = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
        crops.append(face_crop(pad_grey(frame, rgb=True), det.boxes[int(np.argmax(area))]))
    return crops


def check_videos(root: Path, max_videos: int | None = None, detector=None, threads: int = THREADS) -> RealismReport:
    """Read every video of `<root>/labels.csv` (the first `max_videos` of an interleaved order)."""
    from pipeline.video import read_frames

    t0 = time.time()
    root = Path(root)
    rows = read_labels(root)
    if max_videos is not None:
        if max_videos < 1:
            raise DatasetError(f"realism: --max-videos must be >= 1, got {max_videos}")
        rows = interleave(rows)[:max_videos]
    detector = detector or default_detector(threads)
    crops, plans, failures = [], [], []  # plans: (row, apex crop indices, neutral crop indices)
    for row in rows:
        apex = spread(range(row.apex[0], row.apex[1] + 1), APEX_SAMPLES)
        neutral = spread(row.neutral_frames(), NEUTRAL_SAMPLES)
        try:
            frames = read_frames(root / row.video, [*apex, *neutral])
        except VideoError as err:
            failures.append(ReadingFailure(row.video, err.kind, err.message))
            continue
        wanted = [*apex, *neutral]
        found = largest_face_crops([frames[i] for i in wanted], detector)
        ids = []
        for c in found:
            ids.append(None if c is None else len(crops))
            if c is not None:
                crops.append(c)
        a_ids = [i for i in ids[:len(apex)] if i is not None]
        n_ids = [i for i in ids[len(apex):] if i is not None]
        if not a_ids:
            failures.append(ReadingFailure(row.video, "no_face", f"no face on any of apex frames {apex}"))
            continue
        plans.append((row, a_ids, n_ids))
    probs = _predict(crops, threads)
    videos = [VideoReading(row.video, row.label, row.subject, tuple(map(float, probs[a].mean(0))),
                           tuple(map(float, probs[n].mean(0))) if n else None, len(a), len(n))
              for row, a, n in plans]
    return summarise(videos, failures, str(root), time.time() - t0)


@dataclass(frozen=True)
class ImageReading:
    label: str
    """What the photo is meant to show (any text; compared when it is one of `CLASS_NAMES`)."""
    probs: tuple[float, ...] | None
    """7 probabilities in `CLASS_NAMES` order; None when no face was found."""

    @property
    def reads(self) -> str | None:
        return None if self.probs is None else CLASS_NAMES[int(np.argmax(self.probs))]

    @property
    def six_way(self) -> str | None:
        return None if self.probs is None else EXPRESSIONS[int(np.argmax(self.probs[:6]))]


def check_images(images_bgr: Sequence[np.ndarray], labels: Sequence[str], detector=None,
                 threads: int = THREADS) -> list[ImageReading]:
    """The model's reading of still photos (BGR, any sizes), cropped as the videos are."""
    import cv2

    if len(images_bgr) != len(labels):
        raise ValueError(f"check_images: {len(images_bgr)} images but {len(labels)} labels")
    detector = detector or default_detector(threads)
    crops = [largest_face_crops([cv2.cvtColor(im, cv2.COLOR_BGR2RGB)], detector)[0] for im in images_bgr]
    found = [c for c in crops if c is not None]
    probs = iter(_predict(found, threads))
    return [ImageReading(lab, None if c is None else tuple(map(float, next(probs)))) for lab, c in zip(labels, crops)]


def format_images(readings: Sequence[ImageReading]) -> str:
    lines = [f"{'photo of':<12}" + "".join(f"{c[:3]:>6}" for c in CLASS_NAMES) + "  reads  (6-way)"]
    for r in readings:
        probs = "".join(f"{p:6.2f}" for p in r.probs) if r.probs else f"{'(no face)':>42}"
        lines.append(f"{r.label:<12}{probs}  {r.reads or '-'}  ({r.six_way or '-'})")
    return "\n".join(lines)


# ------------------------------------------------------------------ command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo.realism", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a generated set's folder (holds labels.csv)")
    parser.add_argument("--out", type=Path, help="also write the report: .json (every reading) or .md (the table)")
    parser.add_argument("--max-videos", type=int, help="read only this many videos, spread over classes and subjects")
    args = parser.parse_args(argv)
    try:
        report = check_videos(args.root, args.max_videos)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(report.format())
    if args.out:
        from pipeline.io import atomic_path

        text = (report.to_json() if args.out.suffix == ".json" else
                f"# Realism check of {args.root}\n\n```\n{report.format()}\n```\n")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out) as tmp:
            tmp.write_text(text, encoding="utf-8")
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
