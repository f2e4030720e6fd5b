"""Loading `params.yaml` into the typed config (pipeline/schema.py): YAML to dataclasses, overrides, paths.

Loading collects *all* problems (unknown keys, wrong types, out-of-range values) and raises one
`ConfigError` naming each key, before any video is opened. The schema's names are re-exported here, so
`from pipeline.config import TrainHeadConfig` is the one import a caller needs.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
from pipeline.schema import (
    BUILTIN_TOP, CENTERS, DATASET_NAME, DEVICES, FINETUNE_MODES, SECTIONS, Config, DatasetConfig, DetectConfig,
    EvaluateConfig, ExtractConfig, FinetuneConfig, ManifestConfig, ResampleConfig, TrainHeadConfig, _name_problem,
    FAMILIES, dataset_overrides, family_problem, flatten_overrides, head_frames_problems, section_hash)

__all__ = [  # the schema's names, re-exported: callers import the whole config from here
    "BUILTIN_TOP", "CENTERS", "DATASET_NAME", "DEVICES", "FINETUNE_MODES", "SECTIONS", "Config", "DatasetConfig",
    "DetectConfig", "EvaluateConfig", "ExtractConfig", "FinetuneConfig", "ManifestConfig", "ResampleConfig",
    "TrainHeadConfig", "_name_problem", "section_hash", "FAMILIES", "dataset_overrides",
    "flatten_overrides", "load_config", "parse_override"]

log = logging.getLogger(__name__)


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """Convert a YAML value to the annotated type, recording a problem instead of raising."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, problems)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key}: expected a list, got {value!r}")
            return ()
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]", problems) for i, v in enumerate(value))
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {value!r}")
            return {}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{key}: expected true/false, got {value!r}")
        return False
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{key}: expected an integer, got {value!r}")
        return 0
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string
            try:
                return float(value)
            except ValueError:
                pass
        problems.append(f"{key}: expected a number, got {value!r}")
        return 0.0
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{key}: expected a string, got {value!r}")
        return ""
    if tp is Path:
        return Path(str(value))
    return value


def _build(cls: type, raw: Any, key: str, problems: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{key}: expected a mapping, got {raw!r}")
        raw = {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    for unknown in sorted(set(raw) - names):
        problems.append(f"{key}.{unknown}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in fields(cls):
        if f.name in raw:
            before = len(problems)
            value = _coerce(raw[f.name], hints[f.name], f"{key}.{f.name}", problems)
            if len(problems) == before:  # a mistyped value keeps its default: one problem, not a cascade
                kwargs[f.name] = value
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                return None  # a required value that is unusable: reported, nothing to build
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{key}.{f.name}: required")
            return None
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value` → (dotted key, YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError([f"--set {text!r}: expected section.key=value"])
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else ""


def _apply(raw: dict, dotted: str, value: Any, problems: list[str]) -> None:
    parts = dotted.split(".")
    if not all(parts):  # `=3`, `.epochs=3`, `train_head.=3`
        problems.append(f"{dotted!r}: an override key needs a section and a key (section.key), no empty part")
        return
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            problems.append(f"{dotted}: {part} is not a section")
            return
        node = nxt
    node[parts[-1]] = value


def load_config(path: str | Path | None = "params.yaml", *, dataset: str | None = None,
                overrides: typing.Sequence[str | tuple[str, Any]] = (), adapter: str | None = None,
                root: str | None = None, data_root: str | None = None,
                results_root: str | None = None) -> Config:
    """Load and validate `params.yaml`, applying CLI overrides; raises one ConfigError listing all problems.

    Precedence (last wins): params.yaml's sections < the dataset's family's overrides (`families:`) < the
    dataset's own `overrides` < `--set` < explicit flags.
    `path=None`: `params.yaml` in the current folder when there is one, otherwise the built-in defaults
    (`BUILTIN_TOP` and the dataclass defaults); a path given explicitly must exist.
    """
    if path is None and not Path("params.yaml").exists():
        log.info("no params.yaml in %s: running on the built-in defaults (`pipeline init` writes them out "
                 "as a commented params.yaml)", Path.cwd())
        path, raw = Path("params.yaml"), copy.deepcopy(BUILTIN_TOP)
    else:
        path = Path(path or "params.yaml")
        if not path.exists():
            raise ConfigError([f"{path}: parameter file not found (pass --params, or omit it to run on the "
                               "built-in defaults; `pipeline init` writes a params.yaml)"])
        raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level"])
    problems: list[str] = []
    known_top = {"dataset", "data_root", "results_root", "datasets", "families", "repro", *SECTIONS}

    # `--dataset ""` is a mistake, not "use the default": only an absent option falls back.
    name = dataset if dataset is not None else (raw.get("dataset") or "demo")
    raw["dataset"] = name
    datasets_raw = raw.setdefault("datasets", {}) or {}
    raw["datasets"] = datasets_raw
    entry = datasets_raw.get(name)
    if entry is None and (adapter or root):
        entry = datasets_raw[name] = {"adapter": adapter or "folder", "root": root or ""}
    if isinstance(entry, dict):
        if adapter:
            entry["adapter"] = adapter
        if root:
            entry["root"] = root
    cli: list[tuple[str, Any]] = []
    for o in overrides:  # every malformed --set reported with the rest, not the first alone
        if isinstance(o, str) and ("=" not in o or not all(o.split("=", 1)[0].strip().split("."))):
            problems.append(f"--set {o!r}: expected section.key=value (e.g. train_head.epochs=3)")
            continue
        cli.append(parse_override(o) if isinstance(o, str) else o)
    # `--set datasets.D.options.seed=1` or `families.lab...` changes what the datasets are, so it applies
    # before they are read; a section key after the dataset's overrides, which it wins over.
    first = [str(dotted).split(".")[0] in ("datasets", "families") for dotted, _ in cli]
    for (dotted, value), now in zip(cli, first):
        if now:
            _apply(raw, dotted, value, problems)
    families = raw.get("families")
    if families is None:  # an older params.yaml: the built-in families
        families = copy.deepcopy(FAMILIES)
    elif not isinstance(families, dict) or not all(isinstance(v, dict) for v in families.values()):
        problems.append(f"families: expected a mapping of family name to overrides, got {families!r}")
        families = {}
    problems += dict.fromkeys(p for n in [name, *datasets_raw] if (p := _name_problem(n)))
    datasets = {}
    for ds_name, ds_raw in datasets_raw.items():
        built = _build(DatasetConfig, ds_raw, f"datasets.{ds_name}", problems)
        if built is not None:
            datasets[ds_name] = built
            problems += built.check(f"datasets.{ds_name}")
            if problem := family_problem(built, families):
                problems.append(f"datasets.{ds_name}.{problem}")
    if name in datasets and not any(p.startswith(f"datasets.{name}.family") for p in problems):
        family = datasets[name].family_name()
        for dotted, value in dataset_overrides(datasets[name], families):
            section, _, key = dotted.partition(".")
            before = (raw.get(section) or {}).get(key) if isinstance(raw.get(section), dict) else None
            if before is not None and before != value:  # say so: a `dvc exp run -S` of this key would not apply
                log.info("datasets.%s (%s): %s=%r for this dataset (params.yaml's %r does not apply)", name,
                         f"family {family} and its own overrides" if family else "its overrides", dotted, value, before)
            _apply(raw, dotted, value, problems)
    for (dotted, value), done in zip(cli, first):
        if not done:
            _apply(raw, dotted, value, problems)
    # After the overrides: `--set train-head.epochs=3` or `--set nosuch.key=1` adds an unknown section.
    for unknown in sorted(set(raw) - known_top, key=str):
        close = difflib.get_close_matches(str(unknown).replace("-", "_"), sorted(known_top), n=1)
        problems.append(f"{unknown}: unknown top-level key or section" + (f" (did you mean {close[0]}?)" if close else "")
                        + f" (known: {', '.join(sorted(known_top))})")
    if name not in datasets and not _name_problem(name) and not any(p.startswith(f"datasets.{name}") for p in problems):
        problems.append(f"dataset: {name!r} is not listed under datasets: (known: {', '.join(sorted(datasets))}); "
                        "add it to params.yaml or pass --adapter and --root")
    sections = {}
    for key, cls in SECTIONS.items():
        sections[key] = _build(cls, raw.get(key), key, problems)
        if sections[key] is not None:
            problems += sections[key].check(key)
    problems += head_frames_problems(sections.get("resample"), sections.get("train_head"))
    repro = raw.get("repro") or []
    if not isinstance(repro, list) or any(r not in datasets_raw for r in repro):
        problems.append(f"repro: must list dataset names from datasets:, got {repro!r}")
        repro = []
    base_dir = path.resolve().parent
    # Paths in params.yaml are relative to its folder; paths given on the command line to the cwd.
    dr = Path(data_root).resolve() if data_root else base_dir / str(raw.get("data_root") or "data")
    rr = Path(results_root).resolve() if results_root else base_dir / str(raw.get("results_root") or "results")
    for key, folder in (("data_root", dr), ("results_root", rr)):
        if folder.exists() and not folder.is_dir():
            problems.append(f"{key}: {folder} is a file, not a folder; pass --{key.replace('_', '-')} a folder "
                            "(it is created when missing)")
    if problems:
        raise ConfigError(problems)
    return Config(
        dataset=name, data_root=dr, results_root=rr,
        datasets=datasets, repro=tuple(repro), base_dir=base_dir, families=families, **sections,
    )
