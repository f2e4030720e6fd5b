"""train_head -> evaluate -> ablate end to end on a tiny synthetic cache (CPU, seconds)."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.head.train import load_head
from pipeline.head.report import HISTORY_COLUMNS
from pipeline.registry import stage
from tests.head.conftest import CLASSES, tiny_params, write_synthetic_dataset

METRIC_KEYS = {"epochs", "war", "war_std", "uar", "uar_std", "per_class_recall", "n_videos", "n_failed", "n_folds",
               "clip_localization", "chance_war", "chance_uar", "per_fold", "best_epoch", "head_params",
               "n_folds_near_chance", "linear_probe", "epochs_trained"}


def _declared(name: str) -> set[str]:
    """Top-level names a stage declares in the registry, with its state folder."""
    return {o.path.split("/")[1] for o in stage(name).outs} | {".state"}


def _numbers_only(node) -> bool:
    """What `dvc metrics` can show: numbers (or null) at every leaf."""
    if isinstance(node, dict):
        return all(_numbers_only(v) for v in node.values())
    return node is None or (isinstance(node, (int, float)) and not isinstance(node, bool))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("head")
    synth = write_synthetic_dataset(tmp / "data")
    cfg = load_config(tiny_params(tmp, threads=1), dataset="synth")
    metrics = stage("train-head").run(cfg, dataset="synth")
    return cfg, metrics, synth


@pytest.mark.slow
def test_train_head_writes_exactly_its_files_and_schema(trained):
    cfg, metrics, _ = trained
    out = cfg.results_dir("synth")
    assert {p.name for p in out.iterdir()} == _declared("train-head")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["fold-0.pt", "fold-1.pt", "fold-2.pt"]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert set(on_disk) == METRIC_KEYS and _numbers_only(on_disk)
    assert on_disk["n_videos"] == 36 and on_disk["n_failed"] == 2  # distinct ids, not failure rows
    assert on_disk["chance_uar"] == pytest.approx(100 / 3, abs=0.01) and on_disk["chance_war"] == pytest.approx(33.33)
    assert set(on_disk["per_class_recall"]) == set(CLASSES)
    assert list(on_disk["per_fold"]) == ["0", "1", "2"]  # keyed by fold: `dvc metrics show` lists per_fold.1.war
    assert on_disk["per_fold"]["0"].keys() >= {"war", "uar", "best_war", "n_test", "epochs"}
    assert on_disk["epochs_trained"] == on_disk["epochs"] == cfg.train_head.epochs  # epoch_select: fixed
    assert on_disk["war"] == pytest.approx(np.mean([f["war"] for f in on_disk["per_fold"].values()]), abs=0.01)
    # The best epoch is picked from the per-epoch scores (the test_offset window), so it is at least their last epoch's
    # (the reported WAR averages the windows: test_history_... checks both readings).
    last_epoch = []
    for k in on_disk["per_fold"]:
        with (out / "history" / f"fold-{k}.csv").open() as f:
            last_epoch.append(float(list(csv.DictReader(f))[-1]["test_war"]))
    assert on_disk["best_epoch"]["war"] >= np.mean(last_epoch) - 0.01
    assert on_disk["clip_localization"]["n_videos"] == 36
    # The sanity numbers stay numbers: strict criterion and baselines, the probe, near-chance as 0/1.
    assert on_disk["clip_localization"].keys() >= {"overlap", "strict", "random_overlap", "random_strict",
                                                   "centre_overlap", "centre_strict"}
    assert set(on_disk["linear_probe"]) == {"war", "war_std", "uar", "uar_std"}
    assert all(f["near_chance"] in (0, 1) and "probe_war" in f for f in on_disk["per_fold"].values())
    assert on_disk["n_folds_near_chance"] == sum(f["near_chance"] for f in on_disk["per_fold"].values())
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["center"] == cfg.train_head.center and prov["device"] == "cpu"
    assert "linear_probe" in prov["notes"] and "strict" in prov["notes"]["clip_localization"]
    assert "OPTIMISTIC" in prov["notes"]["best_epoch"]
    assert prov["weights"] == "random" and "RANDOM" in prov["warning"]
    assert prov["protocol"].startswith("StratifiedGroupKFold(3)")
    assert prov["params"]["train_head"]["epochs"] == 3 and prov["params"]["train_head"]["folds"] == 3  # effective


@pytest.mark.slow
def test_history_is_one_csv_per_fold_with_every_epoch(trained):
    cfg, metrics, _ = trained
    hist = cfg.results_dir("synth") / "history"
    assert sorted(p.name for p in hist.iterdir()) == ["fold-0.csv", "fold-1.csv", "fold-2.csv"]
    with (hist / "fold-1.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == HISTORY_COLUMNS and [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(float(r["train_loss"]) > 0 and float(r["test_loss"]) > 0 for r in rows)
    assert all(0 <= float(r[c]) <= 100 for r in rows for c in ("train_acc", "test_war", "test_uar"))
    # The reported WAR is the fold's checkpoint's probabilities averaged over the windows (train_head.test_windows:
    # all, the default) and fused with its probe (train_head.fusion: probe, the default); the last epoch's test WAR
    # is the head alone on the test_offset window.
    from pipeline.head.report import war_uar
    from pipeline.head.sampling import ClipSampler
    from pipeline.head.train import predict
    from stages.evaluate import evaluation_data

    head = load_head(cfg.results_dir("synth") / "checkpoints" / "fold-1.pt")
    assert head.config.test_windows == "all"
    data = evaluation_data(cfg, "synth", head.config)
    row_of = {v: i for i, v in enumerate(data.cache.video_id)}
    test = torch.tensor([row_of[v] for v in head.test_video_ids])
    feats, truth = torch.from_numpy(data.cache.features), data.cache.label[test.numpy()]
    assert head.config.fusion == "probe"
    for windows, expected in (("all", metrics["per_fold"]["1"]["war"]), ("fixed", float(rows[-1]["test_war"]))):
        sampler = ClipSampler.from_config(dataclasses.replace(head.config, test_windows=windows), feats.shape[1])
        pred = predict(head.model, feats, test, sampler)["probs"].argmax(1).numpy()
        assert war_uar(truth, pred)[0] == pytest.approx(expected, abs=0.01), windows
        head.model.fusion = None  # the history's scores are the head's alone


@pytest.mark.slow
def test_predictions_map_rich_clip_to_original_frames(trained):
    cfg, metrics, _ = trained
    with (cfg.results_dir("synth") / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36 and len({r["video_id"] for r in rows}) == 36
    assert list(rows[0]) == ["video_id", "fold", "true", "predicted", *[f"prob_{c}" for c in CLASSES],
                             "rich_clip_start", "rich_clip_end"]
    for r in rows:
        probs = [float(r[f"prob_{c}"]) for c in CLASSES]
        assert sum(probs) == pytest.approx(1, abs=1e-4) and r["predicted"] == CLASSES[int(np.argmax(probs))]
        start, end = int(r["rich_clip_start"]), int(r["rich_clip_end"])
        # frame_index = 2 t + 7; clip c spans cached frames 15 + 10c .. 15 + 10c + 14
        c = ((start - 7) // 2 - 15) / 10
        assert c == int(c) and 0 <= c <= 6 and end == start + 28


@pytest.mark.slow
def test_checkpoint_reloads_and_reproduces(trained):
    cfg, _, _ = trained
    head = load_head(cfg.results_dir("synth") / "checkpoints" / "fold-1.pt")
    assert head.class_names == CLASSES and head.in_dim == 32 and head.fold == 1 and head.config.hidden == 32
    assert head.provenance["backbone"] == "synthetic" and len(head.test_video_ids) > 0
    from pipeline.head.inputs import input_dim
    out = head.model(torch.zeros(2, 7, 5, input_dim(head.config.center, 32)))  # two-stream: twice as wide
    assert out.logits.shape == (2, 3) and not head.model.training


@pytest.mark.slow
def test_evaluate_rebuilds_the_report_without_training(trained):
    cfg, metrics, _ = trained
    out = cfg.results_dir("synth")
    before = (out / "metrics.json").read_bytes(), sorted(p.name for p in out.glob("checkpoints/fold-*.pt"))
    summary = stage("evaluate").run(cfg, dataset="synth")
    assert {p.name for p in out.iterdir()} == _declared("train-head") | _declared("evaluate")
    assert summary["war"] == pytest.approx(metrics["war"], abs=0.01)
    assert summary["checkpoint_agreement"] == 100.0  # checkpoints reproduce predictions.csv
    assert ((out / "metrics.json").read_bytes(), sorted(p.name for p in out.glob("checkpoints/fold-*.pt"))) == before
    report = (out / "report.md").read_text()
    assert "mean ± std" in report and "WARNING" in report and "optimistic" in report
    assert "The head fused with the probe minus the probe alone, fold by fold" in report
    assert "averaged over every window start" in report  # test_windows: all, the default, is said
    assert "`train_head.fusion: probe`" in report  # and the fusion, the default too


def test_the_report_says_which_side_of_the_probe_each_fold_falls_on():
    from stages.evaluate import head_against_probe

    folds = {"0": {"war": 50.0, "probe_war": 70.0}, "1": {"war": 60.0, "probe_war": 60.0},
             "2": {"war": 40.0, "probe_war": 55.0}, "3": {"war": 80.0, "probe_war": 75.0}}
    line = head_against_probe(folds)
    assert "-7.50 points" in line and "ahead on 1 of 4 folds, behind on 2, level on 1" in line
    assert "no difference beyond noise (sign test p = 1.00)" in line  # 1 against 2 folds: a coin does as well
    behind = {str(i): {"war": 50.0, "probe_war": 60.0} for i in range(8)}  # 8 of 8 folds: p = 0.008
    assert "the probe is ahead (sign test p = 0.008)" in head_against_probe(behind)
    ahead = {str(i): {"war": 70.0, "probe_war": 60.0} for i in range(8)}
    assert "the head is ahead" in head_against_probe(ahead)
    assert "the head fused with the probe is ahead" in head_against_probe(ahead, fused=True)
    assert head_against_probe({"0": {"war": 90.0}}) is None  # runs without a probe say nothing


def test_evaluate_without_training_says_what_to_run(tmp_path):
    write_synthetic_dataset(tmp_path / "data", n_videos=12, n_subjects=6)
    cfg = load_config(tiny_params(tmp_path), dataset="synth")
    with pytest.raises(PipelineError, match="run `pipeline run train-head --dataset synth` first"):
        stage("evaluate").run(cfg, dataset="synth")


@pytest.mark.slow
def test_ablate_rows_share_folds_and_one_variant(tmp_path):
    from pipeline.head.baselines import build_head

    write_synthetic_dataset(tmp_path / "data", n_videos=12, n_subjects=6, dim=16)
    cfg = load_config(tiny_params(tmp_path, epochs=1, hidden=16, threads=1, variant="authors"), dataset="synth")
    out = stage("ablate").run(cfg, dataset="synth")
    folder = cfg.results_dir("synth")
    assert {p.name for p in folder.iterdir()} == _declared("ablate")
    assert [r["head"] for r in out["rows"]] == ["meanpool", "lstm", "sal", "sal_lrl", "ceflnet"]
    assert len({len(r["per_fold_war"]) for r in out["rows"]}) == 1  # every row on the same folds
    # Every row, the full model included, is built from the paper's equations, whatever train_head.variant says:
    # the full row's size is the paper head's, not the authors' (which differ: docs/head.md).
    paper = dataclasses.replace(cfg.train_head, variant="paper")
    from pipeline.head.inputs import input_dim
    width = input_dim(paper.center, 16)  # the head's input: twice the cache's width for the two-stream inputs
    sizes = {v: sum(t.numel() for t in build_head(dataclasses.replace(paper, variant=v), width, 3).parameters())
             for v in ("paper", "authors")}
    assert sizes["paper"] != sizes["authors"]
    assert out["variant"] == "paper" and out["rows"][-1]["head_params"] == sizes["paper"]
    table = (folder / "ablation.md").read_text()
    for r in out["rows"]:  # the table shows the JSON's numbers
        assert f"| {r['model']} | {r['war']:.2f} ± {r['war_std']:.2f} |" in table


def test_official_split_is_used(tmp_path):
    synth = write_synthetic_dataset(tmp_path / "data", n_videos=12, n_subjects=6, dim=16)
    from pipeline.io import read_manifest, write_manifest

    path = synth["folder"] / "manifest.csv"
    rows = read_manifest(path)
    for i, r in enumerate(rows):
        r.split = "test" if i % 4 == 0 else "train"
    write_manifest(rows, path)
    cfg = load_config(tiny_params(tmp_path, epochs=1, hidden=16, threads=1), dataset="synth")
    m = stage("train-head").run(cfg, dataset="synth")
    prov = json.loads((cfg.results_dir("synth") / "provenance.json").read_text())
    assert prov["protocol"] == "fixed split" and m["n_folds"] == 1 and m["per_fold"]["0"]["n_test"] == 3


def test_unlabelled_dataset_stops_before_training(tmp_path):
    from cache.store import ShardRecord, write_shard
    from pipeline.errors import DatasetError

    recs = [ShardRecord(f"S{i}/v", -1, f"S{i}", np.zeros((105, 8), np.float16), np.arange(105),
                        np.ones(105, np.uint8), np.zeros((105, 5, 2), np.float32)) for i in range(4)]
    write_shard(tmp_path / "data" / "synth" / "features" / "shard-00000.h5", recs,
                {"class_names": ["happiness"], "backbone": "synthetic", "feature_dim": 8, "weights": "random"})
    cfg = load_config(tiny_params(tmp_path), dataset="synth")
    with pytest.raises(DatasetError, match="4 of 4 cached videos have no label"):
        stage("train-head").run(cfg, dataset="synth")
    assert not cfg.results_dir("synth").exists()  # stopped before any fold
