"""Same parameters and seed, two data roots → identical faces.h5, features and metrics.json (CPU)."""
from __future__ import annotations

import pytest

import csv
import json

import h5py
import numpy as np
from click.testing import CliRunner

from cache.reader import load_cache
from pipeline.cli import main
from pipeline.config import load_config
from tests.conftest import VIDEOS, cut_clip, write_params
from tests.reliability import media
from tests.reliability.conftest import RELIABILITY, VFR_PTS_MS


def _h5_arrays(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.slow
def test_two_runs_in_separate_roots_are_identical(tmp_path):
    vids = tmp_path / "vids"
    cut_clip(VIDEOS / "single_face.mp4", vids / "a.mp4", 20)
    media.write_av(vids / "vfr.mp4", media.real_frames(24, "video_01.mp4"), fps=100, pts_ms=VFR_PTS_MS)
    with (vids / "list.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("video", "label", "subject"), ("a.mp4", "happiness", "s1"),
                                 ("vfr.mp4", "sadness", "s2")])
    params = write_params(tmp_path, {"two": {"adapter": "csv", "root": str(vids / "list.csv")}}, "two", **RELIABILITY)
    for root in ("r1", "r2"):
        res = CliRunner().invoke(main, ["run", "extract", "--params", str(params), "--data-root", str(tmp_path / root)])
        assert res.exit_code == 0, res.output
    d1, d2 = tmp_path / "r1" / "two", tmp_path / "r2" / "two"
    f1, f2 = ({**_h5_arrays(d / "faces.h5"), **_h5_arrays(d / "frames.h5")} for d in (d1, d2))
    assert sorted(f1) == sorted(f2) and len(f1) == 2 * 5  # boxes, landmarks, scores, flags + frame_index
    for k in f1:
        np.testing.assert_array_equal(f1[k], f2[k], err_msg=k)
    c1, c2 = load_cache(d1 / "features"), load_cache(d2 / "features")
    assert c1.video_id == c2.video_id == ["a", "vfr"]
    assert c1.features.tobytes() == c2.features.tobytes()
    assert (d1 / "manifest.csv").read_bytes().replace(bytes(tmp_path / "r1"), b"") == \
        (d2 / "manifest.csv").read_bytes().replace(bytes(tmp_path / "r2"), b"")


@pytest.mark.slow
def test_train_head_metrics_are_identical_across_roots(tmp_path):
    from pipeline.registry import stage
    from tests.head.conftest import tiny_params, write_synthetic_dataset

    params = tiny_params(tmp_path, threads=1)
    metrics = []
    for root in ("r1", "r2"):
        write_synthetic_dataset(tmp_path / root / "data", n_videos=24, n_subjects=8, dim=16)
        cfg = load_config(params, dataset="synth", overrides=["train_head.epochs=3", "train_head.folds=2"],
                          data_root=str(tmp_path / root / "data"), results_root=str(tmp_path / root / "results"))
        stage("train-head").run(cfg, dataset="synth")
        metrics.append(json.loads((tmp_path / root / "results" / "synth" / "metrics.json").read_text()))
    for key in ("war", "uar", "per_fold", "per_class_recall"):
        assert metrics[0][key] == metrics[1][key], key
    assert len(metrics[0]["per_fold"]) == 2
