"""`pipeline demo --quick`: a labelled smoke run in its own folders; the full demo says how long it takes."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.commands.demo import DEMO_MINUTES, SMOKE, announce
from pipeline.config import load_config


def test_the_full_demo_announces_what_it_does_and_how_long(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the built-in defaults, as after `pip install`
    text = announce(load_config(None, dataset="demo"), "demo")
    assert "72 videos (6 expressions x 12 people)" in text and "10 folds x 120 epochs" in text
    assert f"about {DEMO_MINUTES} minutes" in text and "--quick" in text


@pytest.mark.slow
def test_quick_demo_is_a_labelled_smoke_run_beside_the_full_demo(tmp_path, monkeypatch):
    """One to two minutes: twelve generated videos through every stage."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["demo", "--quick"])
    assert res.exit_code == 0, res.output + res.stderr
    assert res.stderr.startswith("SMOKE RUN (pipeline demo --quick): 12 videos")  # said first, loudly
    assert res.stdout.rstrip().endswith(SMOKE)  # and last
    metrics = json.loads((tmp_path / "results" / "demo-quick" / "metrics.json").read_text())
    assert metrics["n_videos"] == 12 and len(metrics["per_fold"]) == 2
    assert not (tmp_path / "data" / "demo").exists()  # the full demo's videos and results are not touched
