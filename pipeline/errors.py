"""Exceptions with a meaning for the user, each mapped to a documented exit code (README)."""
from __future__ import annotations

import pickle

from cache.errors import PipelineError  # noqa: F401  (the base lives in the store, the bottom layer)


class ConfigError(PipelineError):
    """Invalid parameters; raised before any video is opened (exit 2)."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


class FolderBusy(PipelineError):
    """Another run is writing the same data or results folder (exit 2); the message names it."""

    exit_code = 2


class DatasetError(PipelineError):
    """A dataset root or annotation layout that does not match the adapter (exit 3)."""

    exit_code = 3


class MissingWeightsError(PipelineError):
    """Model weights that are not on this machine (exit 4); the message says how to get them."""

    exit_code = 4


class TooManyFailures(PipelineError):
    """More videos failed than `max_failure_fraction` allows (exit 5)."""

    exit_code = 5


class VideoError(Exception):
    """A per-video problem, recorded in failures.csv; the batch goes on.

    `kind` is a short machine-readable tag (unreadable, empty, no_face, no_span, ...).
    """

    def __init__(self, kind: str, message: str):
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


UNREADABLE_CHECKPOINT = (RuntimeError, EOFError, OSError, KeyError, TypeError, ValueError, pickle.UnpicklingError)
"""What torch.load and a head rebuild raise for a truncated, foreign or older `fold-k.pt`
(a truncated file: RuntimeError "PytorchStreamReader failed reading zip archive")."""
