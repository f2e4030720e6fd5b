"""Writing files safely: atomic replacement, a lock beside a shared file, read-only mounts.

In the store, the bottom layer: the feature shards and index are written this way, and so is every
output of the pipeline (`pipeline.io` takes these from here)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    Nothing half-written is ever visible under the final name (a crash leaves a `.tmp` file that
    the next run ignores and overwrites).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    # mkstemp creates 0600 whatever the umask; outputs get the mode `open` would give them (shared
    # dataset folders, the scale-out recipe: issue 16).
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except RuntimeError as err:
            raise _as_disk_error(err, final) or err
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _as_disk_error(err: RuntimeError, path: Path) -> OSError | None:
    """The OSError behind a writer's RuntimeError when the disk refused a write (full, or over `ulimit
    -f`): HDF5 says "Can't close dataset (file write failed: ... errno = 27 ...)", torch.save only
    "unexpected pos N vs M". Raised as such, the CLI reports the disk, not a traceback (issue 29)."""
    import errno
    import re

    text = str(err)
    found = re.search(r"errno = (\d+)", text)
    if found and int(found.group(1)) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        code = int(found.group(1))
    elif "unexpected pos" in text:
        code = errno.ENOSPC
    else:
        return None
    out = OSError(code, f"{os.strerror(code)} ({text.splitlines()[0][:200]})", str(path))
    out.__cause__ = err
    return out


@contextlib.contextmanager
def file_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on a hidden `.<name>.lock` beside `target` (read-modify-write of a file
    that parallel `--shard` processes share: failures.csv, index.h5)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if read_only(target.parent):  # nobody can write there: nothing to serialise (issue 29)
        yield
        return
    with open(target.parent / f".{target.name}.lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_only(folder: Path) -> bool:
    """On a file system mounted read-only (not merely a folder without write permission: that is an error
    the user must hear about)."""
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
