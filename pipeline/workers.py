"""Worker processes: they exit when their parent dies, and a heavy stage can start from a fresh pool.

Orphans (issue 16): after `kill -9` of `pipeline run extract`, its workers (now children of PID 1)
stayed alive and idle at ~490 MB each for hours. Every pool we start runs `exit_with_parent` in
each worker: a daemon thread that ends the worker within `PARENT_POLL_S` once it has been
reparented. (Polling rather than Linux's PR_SET_PDEATHSIG: portable, and PDEATHSIG fires when
the *thread* that forked exits, which a pool's management thread can do while the parent lives.)

Fresh pools: joblib's worker processes outlive the call that started them (loky reuses one pool
per process). loky restarts a worker whose memory grew by more than 300 MB since the end of its
*first* task, as a leak. A pool whose first tasks were another stage's (manifest probes,
detection) therefore kills the head-training workers as soon as they import torch and load the
cache, mid-run: the user sees "A worker stopped while some jobs were given to the executor", and
the folds those workers would have run wait for a fresh interpreter to start and import torch
again. A stage with heavy workers starts from a fresh pool instead.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator

PARENT_POLL_S = 0.5


def exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker as soon as `parent_pid` is no longer its parent."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)  # no cleanup to run: the parent that would collect our results is gone

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    """A concurrent.futures pool whose workers exit with this process."""
    return ProcessPoolExecutor(max_workers=max_workers, initializer=exit_with_parent, initargs=(os.getpid(),))


@contextlib.contextmanager
def manager() -> Iterator[object]:
    """A multiprocessing manager (shared queues for worker progress) whose server exits with this process:
    a plain `multiprocessing.Manager()` outlived a killed `train-head` forever (CI, test_crash_safety)."""
    from multiprocessing.managers import SyncManager

    server = SyncManager()
    server.start(exit_with_parent, (os.getpid(),))
    with server:
        yield server


@contextlib.contextmanager
def orphan_safe_workers() -> Iterator[None]:
    """Every joblib (loky) pool started inside this block runs `exit_with_parent` in its workers."""
    from joblib import parallel_config

    with parallel_config(backend="loky", initializer=exit_with_parent, initargs=(os.getpid(),)):
        yield


def release_idle_workers() -> None:
    """Shut down loky's reusable pool (if any) so that the next joblib call starts its own workers.

    Public loky API: asking for a pool with `reuse=False` shuts the current one down; the new one
    has started no worker yet (they start on the first submit) and is shut down at once."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor(max_workers=1, reuse=False).shutdown(wait=True)
