"""The one registry of stages, used by the CLI; a test keeps it equal to dvc.yaml's stages.

Each entry: CLI/DVC name → (module with `run(cfg, *, dataset, ...)`, upstream stage or None).
"""
from __future__ import annotations

import importlib
from types import ModuleType

STAGES: dict[str, tuple[str, str | None]] = {
    "manifest": ("stages.manifest", None),
    "detect": ("stages.detect", "manifest"),
    "resample": ("stages.resample", "detect"),
    "extract": ("stages.extract", "resample"),
    "train-head": ("stages.train_head", "extract"),
    "evaluate": ("stages.evaluate", "train-head"),
}
# Run on demand, not part of the default chain (nor of dvc.yaml's per-dataset pipeline).
EXTRA_STAGES: dict[str, tuple[str, str | None]] = {
    "ablate": ("stages.ablate", "extract"),
}


def stage_module(name: str) -> ModuleType:
    module, _ = {**STAGES, **EXTRA_STAGES}[name]
    return importlib.import_module(module)


def upstream_chain(name: str) -> list[str]:
    """Stages to bring up to date before `name`, in order (the stage itself last)."""
    chain, cur = [], name
    table = {**STAGES, **EXTRA_STAGES}
    while cur is not None:
        chain.append(cur)
        cur = table[cur][1]
    return chain[::-1]
