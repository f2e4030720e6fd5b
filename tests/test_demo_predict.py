"""`pipeline demo` end to end on a tiny demo, then `pipeline predict` with the model it trained."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from tests.conftest import VIDEOS, write_params

pytestmark = pytest.mark.slow  # end to end: every test reads a fixture that runs the stages

TINY = {"videos_per_class_per_identity": 1, "n_frames": [50, 60], "identities": 4}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    params = write_params(base, {"demo": {"adapter": "demo", "root": str(base / "raw"), "options": TINY,
                                          "overrides": {"extract.backbone": "retinaface_mnet"}}}, "demo",
                          detect={"det_size": 256}, train_head={"epochs": 3, "folds": 2, "batch_size": 8})
    res = CliRunner().invoke(main, ["demo", "--params", str(params)])
    assert res.exit_code == 0, res.output
    return base, res.output


def test_demo_report_names_backbone_numbers_and_pictures(demo_run):
    base, out = demo_run
    assert "detector's pretrained MobileNet-0.25 body" in out
    assert "WAR" in out and "UAR" in out and "chance" in out and "localisation" in out
    assert "random weights" not in out
    assert "realism check" in out and "baseline-corrected" in out  # issue 31: read by a real-face model
    metrics = json.loads((base / "results" / "demo" / "metrics.json").read_text())
    provenance = json.loads((base / "results" / "demo" / "provenance.json").read_text())
    assert metrics["n_videos"] == 24 and provenance["backbone"] == "retinaface_mnet"
    assert provenance["subject_norm"].startswith("4 of 4 people normalised")  # 6 videos each, one per class
    assert "clip_localization" in metrics and "best_epoch" in metrics
    # the sanity numbers of issue 11: chance, a near-chance flag per fold, the linear probe, localisation baselines
    assert metrics["chance_war"] > 0 and "n_folds_near_chance" in metrics
    # metrics.json is numbers only (dvc metrics): the flag is 0/1, per_fold keyed by fold
    assert all(f["near_chance"] in (0, 1) and 0 <= f["probe_war"] <= 100 for f in metrics["per_fold"].values())
    loc = metrics["clip_localization"]
    assert {"overlap", "strict", "random_overlap", "random_strict", "centre_overlap", "centre_strict"} <= set(loc)
    assert "linear probe" in out and "random clip" in out and "strict" in out
    for png in ("confusion.png", "activation_maps.png"):
        assert (base / "results" / "demo" / png).stat().st_size > 5_000


def test_predict_on_an_unseen_video(demo_run, tmp_path):
    base, _ = demo_run
    res = CliRunner().invoke(main, ["predict", str(VIDEOS / "single_face.mp4"), "--model",
                                    str(base / "results" / "demo"), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    pred = json.loads((tmp_path / "predictions.json").read_text())[0]
    assert pred["label"] in ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
    assert abs(sum(pred["probabilities"].values()) - 1) < 1e-3
    a, b = pred["frame_range"]
    assert 0 <= a < b <= 71 and pred["time_range_s"][1] <= 72 / 30 + 1e-6
    assert (tmp_path / "single_face_clips.png").stat().st_size > 10_000


def test_predict_no_face_exits_non_zero_with_message(demo_run, tmp_path):
    base, _ = demo_run
    res = CliRunner().invoke(main, ["predict", str(VIDEOS / "no_face.mp4"), "--model",
                                    str(base / "results" / "demo"), "--out", str(tmp_path)])
    assert res.exit_code == 1
    assert "no face found" in res.output and "no_face.mp4" in res.output
