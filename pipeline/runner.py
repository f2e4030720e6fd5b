"""The one stage runner: signature → skip when current → work → failures → failure-rate limit → done.

Every stage goes through `run_stage` (or `registry.stage(name).run`, the same call), so "up to date" is
decided one way. A stage module provides `work(cfg, dataset, *, sig, force, **options) -> Outcome`; its
registry record names the module's optional hooks: `fingerprint` (inputs outside the pipeline, such as the
dataset's files) and `verify` (a check of the outputs' contents before skipping, such as extract's shard
checksums). `work` receives a config that only exposes the parameters the record declares.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import SECTIONS, Config
from pipeline.errors import TooManyFailures
from pipeline.io import Failure, run_lock, update_failures
from pipeline.layout import layout_for, resolve
from pipeline.registry import Stage, stage
from pipeline.state import clear_done, is_current, mark_done, record_overrides, signature

log = logging.getLogger(__name__)


class UndeclaredParameter(RuntimeError):
    """A stage read a params.yaml section or key its registry entry does not list (a bug: DVC and the
    signature would miss changes of it)."""


@dataclass
class Outcome:
    """What a stage's work returns to the runner."""

    summary: dict
    failures: list[Failure] | None = None
    """This run's failure rows (None: the stage records none)."""
    replace_ids: list[str] = field(default_factory=list)
    """Videos whose earlier failure rows of this stage this run supersedes."""
    n_items: int = 0
    """Videos the failure-rate limit is measured against."""
    n_failed: int | None = None
    """Failed videos counted against the limit (default: len(failures))."""
    complete: bool = True
    """False for a partial run (one `--shard` slice): nothing is marked done."""


class _SectionView:
    """Only the declared keys of a section."""

    def __init__(self, section: Any, name: str, keys: set[str], stage_name: str) -> None:
        self._section, self._name, self._keys, self._stage = section, name, keys, stage_name

    def __getattr__(self, key: str) -> Any:
        if key not in self._keys:
            raise UndeclaredParameter(f"stage {self._stage!r} reads {self._name}.{key}, which its entry in "
                                      "pipeline/registry.py does not declare")
        return getattr(self._section, key)


class ScopedConfig:
    """The run's Config, with params.yaml sections limited to what the stage declares."""

    def __init__(self, cfg: Config, st: Stage) -> None:
        self._cfg, self._stage = cfg, st

    def __getattr__(self, name: str) -> Any:
        if name not in SECTIONS:
            return getattr(self._cfg, name)
        if name in self._stage.params:
            return getattr(self._cfg, name)
        keys = {p.split(".", 1)[1] for p in self._stage.params if p.startswith(name + ".")}
        if not keys:
            raise UndeclaredParameter(f"stage {self._stage.name!r} reads params section {name!r}, which its entry "
                                      "in pipeline/registry.py does not declare")
        return _SectionView(getattr(self._cfg, name), name, keys, self._stage.name)

    @property
    def unscoped(self) -> Config:
        return self._cfg


def scoped(cfg: Config | ScopedConfig, name: str) -> ScopedConfig:
    return ScopedConfig(cfg.unscoped if isinstance(cfg, ScopedConfig) else cfg, stage(name))


def run_stage(name: str, cfg: Config, dataset: str | None = None, *, force: bool = False, **options: Any) -> dict:
    """Run one stage for a dataset unless its outputs are current; returns its summary."""
    cfg = cfg.unscoped if isinstance(cfg, ScopedConfig) else cfg
    dataset = dataset or cfg.dataset
    st = stage(name)
    view = ScopedConfig(cfg, st)
    sig = signature(cfg, dataset, name, fingerprint(cfg, st, dataset))
    partial = any(options.get(k) is not None for k in st.partial)
    summary = None
    if not force and not partial and is_current(cfg, dataset, name, sig):
        verify = st.hook("verify")
        if verify is None:
            summary = {"stage": name, "dataset": dataset, "skipped": "up to date"}
        elif verify(view, dataset, sig):
            summary = {"stage": name, "dataset": dataset, "skipped": "up to date (outputs verified)"}
    if summary is None:
        # One writer per folder (issue 29): the data folder for the data stages, the results folder for the others.
        with run_lock(resolve(st.state_root + "/", cfg, dataset), shared=partial):
            summary = _work(st, view, cfg, dataset, sig, force, options)
    record_overrides(cfg, dataset)  # after a success, skipped or not: dvc.yaml's stages depend on it
    return summary


def fingerprint(cfg: Config | ScopedConfig, st: Stage, dataset: str) -> str:
    """The stage's extra signature input from its `fingerprint` hook ("" without one)."""
    hook = st.hook("fingerprint")
    return "" if hook is None else hook(scoped(cfg, st.name), dataset)


def _work(st: Stage, view: ScopedConfig, cfg: Config, dataset: str, sig: str, force: bool, options: dict) -> dict:
    name = st.name
    clear_done(cfg, dataset, name)  # no claim of currency while outputs change; mark_done below is last
    out: Outcome = st.load().work(view, dataset, sig=sig, force=force, **options)
    summary = out.summary
    if out.failures is not None:
        lay = layout_for(cfg, dataset)
        update_failures(lay.failures, name, out.failures, replace_ids=out.replace_ids)
        n_failed = len(out.failures) if out.n_failed is None else out.n_failed
        if st.failure_limit and out.n_items:
            section, key = st.failure_limit.split(".")
            limit = getattr(getattr(cfg, section), key)
            if n_failed / out.n_items > limit:
                raise TooManyFailures(f"{name}: {n_failed} of {out.n_items} videos failed (> {st.failure_limit}="
                                      f"{limit}); see {lay.failures}")
    if out.complete:
        mark_done(cfg, dataset, name, sig, summary)
    return summary
