"""Recognising stale outputs: each stage records the signature of its parameters and inputs.

A stage's signature hashes its own config section(s), the dataset entry, and the signature of the
stage upstream, so a changed detect parameter makes resample and extract stale too (the same rule
DVC applies, kept here so `pipeline run extract` alone can run what is missing or stale).
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Config, section_hash
from pipeline.io import atomic_path
from pipeline.layout import layout_for

UPSTREAM = {"manifest": None, "detect": "manifest", "resample": "detect", "extract": "resample"}
SECTIONS = {"manifest": ("manifest",), "detect": ("detect",), "resample": ("resample",), "extract": ("extract",)}
# Keys that change speed, not results: changing them must not invalidate outputs.
# shard_size only regroups videos into files: existing shards stay valid (issue 16: it re-extracted all).
VOLATILE = {"workers", "threads", "device", "batch_size", "max_failure_fraction", "qc_samples", "shard_size"}


def _params(cfg: Config, stage: str) -> list:
    out = []
    for name in SECTIONS[stage]:
        section = getattr(cfg, name).__dict__
        out.append({k: v for k, v in section.items() if k not in VOLATILE})
    return out


def recorded(cfg: Config, dataset: str, stage: str) -> str | None:
    path = layout_for(cfg, dataset).state / f"{stage}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["signature"]
    except (json.JSONDecodeError, KeyError):
        return None


def signature(cfg: Config, dataset: str, stage: str, listing_fingerprint: str = "") -> str:
    ds = cfg.dataset_config(dataset)
    up = UPSTREAM[stage]
    upstream_sig = recorded(cfg, dataset, up) if up else listing_fingerprint
    return section_hash(_params(cfg, stage), {"adapter": ds.adapter, "root": ds.root, "classes": ds.classes,
                                              "fps": ds.fps, "options": ds.options}, upstream_sig or "")


def mark_done(cfg: Config, dataset: str, stage: str, sig: str, summary: dict) -> None:
    path = layout_for(cfg, dataset).state / f"{stage}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"signature": sig, "summary": summary}, indent=1, default=str))


def is_current(cfg: Config, dataset: str, stage: str, outputs: list[Path], listing_fingerprint: str = "") -> bool:
    if not all(Path(p).exists() for p in outputs):
        return False
    return recorded(cfg, dataset, stage) == signature(cfg, dataset, stage, listing_fingerprint)
