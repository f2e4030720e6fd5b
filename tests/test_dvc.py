"""dvc.yaml matches the CLI's stage registry, and `dvc repro` runs the demo offline, incrementally."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.registry import STAGES

ROOT = Path(__file__).resolve().parent.parent


def test_registry_equals_dvc_stages():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(STAGES)
    for name, stage in stages.items():
        assert stage["foreach"] == "${repro}"
        assert f"pipeline run {name} --dataset ${{item}}" in stage["do"]["cmd"]


def _dvc(cwd: Path, *args: str) -> str:
    out = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _ran(log: str) -> set[str]:
    return {line.split("'")[1].split("@")[0] for line in log.splitlines() if line.startswith("Running stage '")}


@pytest.mark.slow
def test_dvc_repro_demo_is_incremental(tmp_path):
    if shutil.which("dvc") is None or shutil.which("pipeline") is None:
        pytest.fail("dvc and the pipeline command must be installed (pip install -e '.[dev]')")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    repo = tmp_path / "repo"
    for f in files:
        if f.startswith("tests/data/"):
            continue
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, repo / f)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    demo = params["datasets"]["demo"]
    demo["options"] = {"videos_per_class_per_identity": 1, "n_frames": [50, 60], "identities": 4}  # 24 short videos
    demo["overrides"].update({"train_head.epochs": 2, "train_head.folds": 2, "detect.det_size": 256})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    first = _dvc(repo, "repro")
    assert _ran(first) == set(STAGES)
    assert (repo / "results" / "demo" / "metrics.json").exists()
    second = _dvc(repo, "repro")
    assert _ran(second) == set() and "up to date" in second
    params["train_head"]["lr"] = 2e-4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _dvc(repo, "repro")
    assert _ran(third) == {"train-head", "evaluate"}
    assert "war" in _dvc(repo, "metrics", "show")
    _dvc(repo, "plots", "show")
    html = (repo / "dvc_plots" / "index.html").read_text()
    assert "confusion.png" in html and "tsne.png" in html
