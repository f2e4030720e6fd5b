"""params.yaml → typed config: precedence, types, and every problem reported at once."""
from __future__ import annotations

import pytest
import yaml

from pipeline.config import load_config
from pipeline.errors import ConfigError


def _params(tmp_path, **extra):
    raw = {"dataset": "a", "datasets": {"a": {"adapter": "folder", "root": "videos",
                                              "overrides": {"detect.stride": 2, "train_head.folds": 3}}},
           "train_head": {"lr": "1e-4"}, **extra}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_precedence_yaml_dataset_overrides_set_flags(tmp_path):
    cfg = load_config(_params(tmp_path))
    assert cfg.detect.stride == 2 and cfg.train_head.folds == 3  # the dataset's overrides
    assert cfg.train_head.lr == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string: coerced
    assert cfg.resolve_root() == tmp_path / "videos"  # relative to params.yaml
    cfg = load_config(_params(tmp_path), overrides=["detect.stride=4"], root="/elsewhere", data_root="out")
    assert cfg.detect.stride == 4 and str(cfg.resolve_root()) == "/elsewhere"
    assert cfg.data_root.is_absolute() and cfg.data_root.name == "out"  # a flag is relative to the cwd


def test_every_problem_at_once_by_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_params(tmp_path, detect={"det_size": "big", "nonsense": 1}),
                    overrides=["extract.backbone=vgg", "train_head.test_frame_offsets=[0, 3]"])
    keys = " ".join(err.value.problems)
    for key in ("detect.det_size", "detect.nonsense", "extract.backbone", "train_head.test_frame_offsets"):
        assert key in keys
    assert len(err.value.problems) == 4


def test_unknown_dataset_and_adapter(tmp_path):
    with pytest.raises(ConfigError, match="not listed under datasets"):
        load_config(_params(tmp_path), dataset="nope")
    with pytest.raises(ConfigError, match="unknown adapter 'nope'"):
        load_config(_params(tmp_path), adapter="nope")
    cfg = load_config(_params(tmp_path), dataset="fresh", adapter="folder", root="/v")  # no params entry needed
    assert cfg.dataset_config().adapter == "folder"


def test_repo_params_are_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parent.parent / "params.yaml")
    assert cfg.dataset == "demo" and cfg.extract.backbone == "retinaface_mnet"  # the demo's override
    # The demo overrides only the offline backbone; folds, epochs, batch and lr are the sections' (the
    # paper's), so `-S train_head.epochs=7` reaches the demo as it reaches any dataset.
    assert cfg.train_head.lr == pytest.approx(1e-4) and cfg.train_head.epochs == 120 and cfg.train_head.folds == 10
    assert cfg.train_head.batch_size == 8
    mmi = load_config(Path(__file__).resolve().parent.parent / "params.yaml", dataset="mmi")
    # folder and csv datasets (and the demo) get the section's default, the best worst case over both kinds of
    # clip: optical flow and HOG beside the backbone, each input dimension standardised
    assert cfg.train_head.center == "two_stream_first" and cfg.extract.motion == "flow_hog_mesh" and cfg.train_head.standardize
    # the lab family: the section as it is (flow + HOG + mesh, standardize, EIAN's clip scores seeing their
    # neighbours), the best worst case on transient clips too
    assert mmi.train_head.center == "two_stream_first" and mmi.extract.motion == "flow_hog_mesh"
    assert mmi.train_head.standardize and mmi.overrides_of() == [] and cfg.train_head.clip_kernel == 3
    # the wild family: HOG and the mesh without flow or standardize, and mostly the probe, the best worst case on held expressions
    afew = load_config(Path(__file__).resolve().parent.parent / "params.yaml", dataset="afew")
    assert afew.train_head.center == "two_stream_first" and afew.extract.motion == "hog_fine_mesh"
    assert not afew.train_head.standardize and afew.train_head.fusion_weight == 0.85
    assert afew.train_head.clip_kernel == 3  # the sections' head: its worst case holds there too (robust_kernel_wild.md)
    assert cfg.train_head.fusion_weight == mmi.train_head.fusion_weight == 0.5
    assert set(cfg.repro) <= set(cfg.datasets)
    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "params.yaml").read_text())
    assert raw["train_head"]["epochs"] == 120
    assert raw["datasets"]["demo"]["overrides"] == {"extract": {"backbone": "retinaface_mnet"}}  # no head setting
    for name, entry in raw["datasets"].items():
        assert not any("." in key for key in (entry.get("overrides") or {})), name  # DVC's -S cannot reach dots


def test_overrides_as_nested_mappings(tmp_path):
    raw = {"dataset": "a", "datasets": {"a": {"adapter": "folder", "root": "v",
                                              "overrides": {"detect": {"stride": 2}, "train_head": {"folds": 3}}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "params.yaml")
    assert cfg.detect.stride == 2 and cfg.train_head.folds == 3
    cfg = load_config(tmp_path / "params.yaml", overrides=["train_head.folds=5"])  # --set still wins
    assert cfg.train_head.folds == 5


def test_families_apply_under_the_dataset_own_overrides(tmp_path):
    raw = {"dataset": "m", "families": {"lab": {"train_head": {"folds": 4, "epochs": 7}}, "wild": {}},
           "datasets": {"m": {"adapter": "mmi", "root": "v", "overrides": {"train_head": {"epochs": 9}}},
                        "f": {"adapter": "folder", "root": "v"},
                        "posed": {"adapter": "folder", "root": "v", "family": "lab"},
                        "off": {"adapter": "mmi", "root": "v", "family": ""}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)  # MMI is in its adapter's family; its own overrides win over the family's
    assert (cfg.train_head.folds, cfg.train_head.epochs) == (4, 9)
    assert sorted(cfg.overrides_of()[:2]) == [("train_head.epochs", 7), ("train_head.folds", 4)]  # the family's,
    assert cfg.overrides_of()[2:] == [("train_head.epochs", 9)]  # then its own
    assert load_config(path, overrides=["train_head.folds=6"]).train_head.folds == 6  # --set still wins
    assert load_config(path, dataset="f").train_head.folds == 10  # a folder: no family
    assert load_config(path, dataset="posed").train_head.folds == 4  # named in the entry
    assert load_config(path, dataset="off").train_head.folds == 10  # `family: ""`: none
    # A dataset given on the command line alone (a pip-installed user's MMI) gets its family too.
    assert load_config(path, dataset="new", adapter="mmi", root="/v").train_head.epochs == 7
    raw["datasets"]["f"]["family"] = "labb"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"datasets.f.family: 'labb' is not listed under families: \(known: lab, wild\)"):
        load_config(path)


def test_a_params_file_without_families_gets_the_builtin_ones(tmp_path):
    from pipeline.config import FAMILIES

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"dataset": "m", "datasets": {"m": {"adapter": "afew", "root": "v"}}}))
    cfg = load_config(path)
    assert cfg.families == FAMILIES and cfg.extract.motion == "hog_fine_mesh" and not cfg.train_head.standardize
    folder = load_config(path, dataset="x", adapter="folder", root="/v")
    assert folder.extract.motion == "flow_hog_mesh" and folder.train_head.standardize


def test_set_reaches_a_dataset_entry_and_a_family(tmp_path):
    """`--set datasets.D...` and `--set families...` change what the datasets are, so they apply before the
    datasets are read (the quick demo's options); a section key given with --set still wins over both."""
    path = _params(tmp_path)
    cfg = load_config(path, overrides=["datasets.a.options.seed=3", "datasets.a.family=lab",
                                       "families.lab.train_head.epochs=5", "train_head.folds=6"])
    assert cfg.dataset_config().options == {"seed": 3} and cfg.dataset_config().family_name() == "lab"
    assert cfg.train_head.epochs == 5 and cfg.train_head.folds == 6  # the family's; --set over the dataset's 3
