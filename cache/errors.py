"""The base of every error the user can fix; `pipeline.errors` derives its exit-coded errors from it.

Defined in the store, the bottom layer, so that the cache raises it without importing `pipeline`."""
from __future__ import annotations


class PipelineError(Exception):
    """Base class: a problem the user can fix, reported as one message without a traceback."""

    exit_code = 1
