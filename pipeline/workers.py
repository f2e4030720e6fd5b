"""joblib's worker processes outlive the call that started them (loky reuses one pool per process).

loky restarts a worker whose memory grew by more than 300 MB since the end of its *first* task, as a
leak. A pool whose first tasks were another stage's (manifest probes, detection) therefore kills the
head-training workers as soon as they import torch and load the cache, mid-run: the user sees "A
worker stopped while some jobs were given to the executor", and the folds those workers would have
run wait for a fresh interpreter to start and import torch again.
A stage with heavy workers starts from a fresh pool instead.
"""
from __future__ import annotations


def release_idle_workers() -> None:
    """Shut down loky's reusable pool (if any) so that the next joblib call starts its own workers."""
    try:
        from joblib.externals.loky import reusable_executor
    except ImportError:  # another joblib layout: nothing to release
        return
    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)
