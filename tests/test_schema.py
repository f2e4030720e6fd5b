"""One source of defaults: the schema's dataclass defaults and `BUILTIN_TOP`, which params.yaml repeats key for
key, and the clip sampler that reads train_head instead of keeping its own copy."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.config import BUILTIN_TOP, SECTIONS, TrainHeadConfig, load_config
from pipeline.head.sampling import ClipSampler

PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"

DELIBERATE: dict[str, str] = {}
"""`section.key` whose params.yaml value differs from the dataclass default on purpose, with the reason.
None today: a dataset that needs another value says so in its own `overrides:` (the demo's backbone)."""


def test_params_yaml_holds_every_section_key_at_its_dataclass_default():
    raw = yaml.safe_load(PARAMS.read_text())
    # Read as every run reads it (types coerced), for a dataset with no `overrides:` of its own.
    loaded = load_config(PARAMS, dataset="testvideos")
    assert not loaded.dataset_config().overrides
    assert set(raw) >= set(SECTIONS)
    for section, cls in SECTIONS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(raw[section]) == names, f"params.yaml {section}: keys differ from {cls.__name__}'s fields"
        for f in dataclasses.fields(cls):
            key, value = f"{section}.{f.name}", getattr(getattr(loaded, section), f.name)
            if key in DELIBERATE:
                assert value != f.default, f"{key} is listed as deliberate but equals the default"
            else:
                assert value == f.default, f"{key}: params.yaml has {value!r}, {cls.__name__} defaults to {f.default!r}"


def test_params_yaml_top_level_is_the_builtin_one():
    raw = yaml.safe_load(PARAMS.read_text())
    for key in ("dataset", "data_root", "results_root", "repro"):
        assert raw[key] == BUILTIN_TOP[key], key
    # The repository lists the real datasets besides the demo; BUILTIN_TOP (a pip-installed user's empty
    # folder) only the demo, which `pipeline demo` generates: the same entry in both.
    assert raw["datasets"]["demo"] == BUILTIN_TOP["datasets"]["demo"]
    assert raw["families"] == BUILTIN_TOP["families"]  # a wheel user's MMI gets the lab family's overrides too
    assert set(BUILTIN_TOP) == {"dataset", "data_root", "results_root", "repro", "datasets", "families"}
    assert set(BUILTIN_TOP["datasets"]) == {"demo"}


def test_clip_sampler_reads_train_head_and_keeps_no_defaults():
    th = dataclasses.replace(TrainHeadConfig(), n_clips=3, clip_stride=4, test_offset=2, train_offset_max=5,
                             test_frame_offsets=(0, 2, 4, 6, 8))
    sampler = ClipSampler.from_config(th, 40)
    keys = [f.name for f in dataclasses.fields(ClipSampler) if f.name != "n_frames"]
    assert {k: getattr(sampler, k) for k in keys} == {k: getattr(th, k) for k in keys}
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(ClipSampler))
    # The cache-length check is the schema's, the one load_config applies to resample.n_frames.
    assert ClipSampler.from_config(th, th.frames_needed).n_frames == th.frames_needed == 5 + 2 * 4 + 15
    with pytest.raises(ValueError, match=f"cache holds {th.frames_needed - 1} frames"):
        ClipSampler.from_config(th, th.frames_needed - 1)
