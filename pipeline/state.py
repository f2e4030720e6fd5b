"""Recognising stale outputs: each stage records the signature of what produced its outputs.

A stage's signature hashes the parameters it declares in the registry (minus its speed-only keys),
the dataset's entry, the hash of the code it imports, and the signature recorded by the stage
upstream — so a changed detect parameter, or an edit of `pipeline/tracking.py`, makes resample and
extract stale too: the rule DVC applies, kept here so `pipeline run extract` alone recomputes what
is missing or stale, and agrees with `dvc repro`. An upstream that runs every time (`always_changed`:
manifest) stands in by the bytes of its outputs instead (see `upstream_part`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from pipeline.config import Config, section_hash
from pipeline.io import read_only, sha256_file, write_text_if_changed
from pipeline.layout import resolve
from pipeline.registry import OVERRIDES, Stage, code_hash, stage

log = logging.getLogger(__name__)


def state_path(cfg: Config, dataset: str, name: str) -> Path:
    return resolve(stage(name).state, cfg, dataset)


def params_of(cfg: Config, st: Stage) -> dict:
    """The declared parameters' values, speed-only keys left out."""
    out: dict = {}
    for item in st.params:
        section, _, key = item.partition(".")
        values = getattr(cfg, section).__dict__
        chosen = {key: values[key]} if key else values
        out.setdefault(section, {}).update({k: v for k, v in chosen.items() if k not in st.volatile})
    return out


def recorded(cfg: Config, dataset: str, name: str) -> str | None:
    path = state_path(cfg, dataset, name)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["signature"]
    except (json.JSONDecodeError, KeyError):
        return None


def upstream_part(cfg: Config, dataset: str, st: Stage) -> str:
    """What a stage's signature takes from its upstream: the upstream's recorded signature; for an upstream
    that runs every time (`always_changed`: manifest, whose outputs are small files), the bytes of its
    outputs, as DVC sees them. The manifest's signature changes with the code of every adapter and of the
    demo generator, which leave a folder dataset's manifest.csv as it was: that must not recompute detect."""
    if not st.upstream:
        return ""
    up = stage(st.upstream)
    if not up.always_changed:
        return recorded(cfg, dataset, st.upstream) or ""
    if recorded(cfg, dataset, st.upstream) is None:  # never finished: nothing to take from it yet
        return ""
    paths = [resolve(o.path, cfg, dataset) for o in up.outs]
    return ",".join(sha256_file(p) if p.is_file() else "" for p in paths)


def signature(cfg: Config, dataset: str, name: str, input_fingerprint: str = "") -> str:
    st = stage(name)
    ds = cfg.dataset_config(dataset)
    upstream_sig = upstream_part(cfg, dataset, st)
    return section_hash(params_of(cfg, st), {"adapter": ds.adapter, "root": ds.root, "classes": ds.classes,
                                             "fps": ds.fps, "options": ds.options},
                        upstream_sig, input_fingerprint, code_hash(name))


def record_overrides(cfg: Config, dataset: str) -> None:
    """Write the dataset's family and overrides to `registry.OVERRIDES` where they changed (what dvc.yaml's stages
    depend on in place of the whole `families:` block). Left as it is on read-only storage, as `mark_done`."""
    ds = cfg.dataset_config(dataset)
    path = resolve(OVERRIDES, cfg, dataset)
    text = json.dumps({"family": ds.family_name(), "overrides": dict(cfg.overrides_of(dataset))}, indent=1,
                      sort_keys=True, default=str) + "\n"
    if path.parent.exists() and read_only(path.parent):
        return
    write_text_if_changed(path, text)


def mark_done(cfg: Config, dataset: str, name: str, sig: str, summary: dict) -> None:
    """Record the signature, the summary and the effective parameters (after the dataset's overrides)."""
    ds = cfg.dataset_config(dataset)
    params = {**params_of(cfg, stage(name)), f"datasets.{dataset}": dataclasses.asdict(ds)}
    path = state_path(cfg, dataset, name)
    text = json.dumps({"signature": sig, "summary": summary, "params": params}, indent=1, default=str)
    if path.parent.exists() and read_only(path.parent):
        if not path.exists() or path.read_text() != text:
            log.warning("%s is on read-only storage: %s's record is left as it was (its outputs were not "
                        "rewritten either); the next run checks them again", path.parent, name)
        return
    write_text_if_changed(path, text)


def clear_done(cfg: Config, dataset: str, name: str) -> None:
    """Withdraw the stage's claim that its outputs are current, before any of them is touched: a run
    stopped half-way (Ctrl-C, a full disk) leaves a mix of old and new files and no record saying they
    belong together, so the next run recomputes (issue 29). `mark_done` writes the record last."""
    path = state_path(cfg, dataset, name)
    if path.exists() and not read_only(path.parent):  # read-only: any output write fails, clearly
        path.unlink()


def is_current(cfg: Config, dataset: str, name: str, sig: str) -> bool:
    """Recorded with the same signature, and every declared output still there."""
    outs = [resolve(o.path, cfg, dataset) for o in stage(name).outs]
    return all(p.exists() for p in outs) and recorded(cfg, dataset, name) == sig
