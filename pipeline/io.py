"""Small I/O primitives shared by the stages: atomic writes, the manifest table, failures.csv."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator

from cache.files import atomic_path, file_lock, read_only  # noqa: F401  (one place: the store's)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (weights and checkpoints are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_HELD: dict[Path, int] = {}
"""Folders this process holds a run lock on (a second `flock` on a new descriptor would refuse itself)."""
_LOCK_FDS: dict[Path, int] = {}
"""Their descriptors, closed in every forked child (below)."""


def _drop_inherited_locks() -> None:
    """A forked child (a multiprocessing manager, a fork pool) shares the parent's open lock file, and an
    `flock` lasts until every copy is closed: were the parent killed, the orphaned child would hold the
    folder, and the rerun be refused with no live holder to name (CI, test_crash_safety). The child runs
    no stage, so it lets go of the copies; the parent's lock is untouched. /dev/null is put in their place
    rather than closing them: the number stays taken, so the inherited file object can never close a
    descriptor the child opened later."""
    if _LOCK_FDS:
        null = os.open(os.devnull, os.O_RDONLY)
        for fd in _LOCK_FDS.values():
            os.dup2(null, fd)
        os.close(null)
    _LOCK_FDS.clear()
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def run_lock(folder: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold `.<folder name>.lock` beside `folder` for a run that writes it, or raise FolderBusy naming who
    holds it. Beside, not inside: a run refused before its first output leaves no folder behind.

    Refuses at once rather than waiting: the other run may be hours of training, and a command that
    silently waits looks hung (issue 29). `--shard k/N` slices share the lock (they write disjoint
    files by design); a whole-dataset run needs it alone. The holder's pid and command are written
    into the file, for the message."""
    from pipeline.errors import FolderBusy

    folder = Path(folder).resolve()
    if folder in _HELD:
        _HELD[folder] += 1
        try:
            yield
        finally:
            _HELD[folder] -= 1
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    if read_only(folder.parent):  # a finished cache on read-only storage: no writer to exclude; a write fails clearly
        yield
        return
    path = folder.parent / f".{folder.name}.lock"
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holders = [line for line in fh.read().splitlines() if _alive(line)]
            raise FolderBusy(f"{folder} is in use by another run ({'; '.join(holders) or 'a process'}); wait "
                             "for it to finish, or stop it, then rerun (a stopped run resumes)") from None
        if not shared:
            fh.truncate(0)
        fh.write(f"pid {os.getpid()}: {' '.join(_command())}\n")
        fh.flush()
        _HELD[folder], _LOCK_FDS[folder] = 1, fh.fileno()
        try:
            yield
        finally:
            del _HELD[folder], _LOCK_FDS[folder]
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _command() -> list[str]:
    import sys

    return [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]


def _alive(line: str) -> bool:
    """A `pid N: command` line of a process still running."""
    try:
        os.kill(int(line.split(":", 1)[0].removeprefix("pid ")), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def clean_stale_temporaries(folder: Path, pattern: str = ".*.tmp") -> int:
    """Remove `.tmp` leftovers of a killed run matching `pattern`; returns how many were removed.

    Processes sharing a folder (`extract --shard k/N`) pass a pattern naming only their own files:
    another process's temporary may be in the middle of being written."""
    if not folder.exists():
        return 0
    stale = list(folder.glob(pattern))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


@dataclass
class ListedVideo:
    """What an adapter says of one video; the first columns of `manifest.csv`, declared once for both
    the adapters' `VideoEntry` and the manifest's `ManifestRow`."""

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
    group: str = ""
    """The fold key when it is not the person: videos sharing a group never split across folds (a family of
    related faces, e.g. the demo's blends and their parents); '' = the subject. `subject` stays the person,
    whom `subject_norm` and identity handling normalise."""


@dataclass
class ManifestRow(ListedVideo):
    """One row of `manifest.csv`: what the adapter listed plus what the probe found."""

    path: str
    """As written in the csv (the field keeps its place, second)."""
    n_frames: int = 0
    """Frames actually decoded (never the header's count)."""
    header_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    rotation: int = 0
    crop: str = ""
    """`left`/`right` half of each frame (MMI dual view), or '' for the whole frame."""
    extra: str = ""
    """Adapter-specific fields as JSON (e.g. MMI `view`)."""
    status: str = "ok"
    """`ok`, or the failure kind (the reason is in failures.csv)."""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def crop_side(self) -> str | None:
        return self.crop or None


_INT_FIELDS = {"fold", "apex_start", "apex_end", "n_frames", "header_frames", "width", "height", "rotation"}


def write_text_if_changed(path: Path, text: str) -> bool:
    """Write `text` atomically unless the file already holds exactly it; True when written.

    Nothing that did not change is rewritten: a finished cache on read-only storage can be rechecked
    and trained on (issue 29), and an unchanged file keeps its mtime."""
    path = Path(path)
    try:
        if path.read_bytes() == text.encode("utf-8"):
            return False
    except FileNotFoundError:
        pass
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    return True


def _csv_text(names: list[str], rows: Iterable[dict]) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=names)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_manifest(rows: Iterable[ManifestRow], path: Path) -> None:
    names = [f.name for f in fields(ManifestRow)]
    write_text_if_changed(path, _csv_text(names, ({k: ("" if v is None else v) for k, v in dataclasses.asdict(row).items()}
                                                  for row in rows)))


def read_manifest(path: Path) -> list[ManifestRow]:
    rows = []
    with Path(path).open(newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            kw = {}
            for k, v in raw.items():
                if k in _INT_FIELDS:
                    kw[k] = int(float(v)) if v not in ("", None) else (None if k in ("fold", "apex_start", "apex_end") else 0)
                elif k == "fps":
                    kw[k] = float(v or 0)
                elif k == "split":
                    kw[k] = v or None
                else:
                    kw[k] = v
            rows.append(ManifestRow(**kw))
    return rows


@dataclass(frozen=True)
class Failure:
    video_id: str
    stage: str
    kind: str
    message: str


FAILURE_COLUMNS = ["video_id", "stage", "kind", "message"]


def read_failures(path: Path) -> list[Failure]:
    if not Path(path).exists():
        return []
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [Failure(**{k: r[k] for k in FAILURE_COLUMNS}) for r in csv.DictReader(f)]


def update_failures(path: Path, stage: str, failures: Iterable[Failure], *, replace_ids: Iterable[str] = ()) -> None:
    """Rewrite `failures.csv`: keep other stages' rows, replace this stage's rows for the videos it
    (re)processed (`replace_ids`), add the new ones. Atomic, so a crash never truncates it."""
    replace = set(replace_ids)
    new = list(failures)
    replace |= {f.video_id for f in new}
    # Locked: `extract --shard k/N` processes update the same file; unlocked, one's rows were lost
    # (tests/reliability/test_concurrency.py: 180 of 301 rows survived two writers).
    with file_lock(Path(path)):
        kept = [f for f in read_failures(path) if not (f.stage == stage and f.video_id in replace)]
        write_text_if_changed(Path(path), _csv_text(FAILURE_COLUMNS, (dataclasses.asdict(fl) for fl in kept + new)))
