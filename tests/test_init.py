"""The pip-installed user: no params.yaml → built-in defaults; `pipeline init` → a project that `dvc repro` runs
outside this repository."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.commands.init import INIT_STAGES, VERSION_FILE, dvc_yaml
from pipeline.config import BUILTIN_TOP, load_config
from tests.conftest import cut_clip

REPO = Path(__file__).resolve().parent.parent
VIDEOS = REPO / "tests" / "data" / "videos"


def test_no_params_yaml_runs_on_builtin_defaults(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # an empty folder, as after `pip install` anywhere
    with caplog.at_level(logging.INFO, logger="pipeline.config"):
        res = CliRunner().invoke(main, ["run", "manifest", "--adapter", "folder", "--root", str(VIDEOS),
                                        "--dataset", "mine"])
    assert res.exit_code == 0, res.output
    assert "built-in defaults" in caplog.text
    rows = (tmp_path / "data" / "mine" / "manifest.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # header + the four real clips


def test_an_explicit_params_file_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["run", "manifest", "--params", "nope.yaml", "--adapter", "folder",
                                    "--root", str(VIDEOS)])
    assert res.exit_code == 2 and "nope.yaml: parameter file not found" in res.output


def test_init_writes_the_builtin_defaults_and_a_repo_free_dvc_yaml(tmp_path, monkeypatch):
    res = CliRunner().invoke(main, ["init", str(tmp_path / "proj")])
    assert res.exit_code == 0, res.output
    written = load_config(tmp_path / "proj" / "params.yaml")
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    builtin = load_config(None)
    for key in ("dataset", "datasets", "repro", "manifest", "detect", "resample", "extract", "train_head", "evaluate"):
        assert getattr(written, key) == getattr(builtin, key), key
    text = (tmp_path / "proj" / "params.yaml").read_text()
    assert "  # Frames are resized so their long side" in text  # field docstrings become comments
    stages = yaml.safe_load((tmp_path / "proj" / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["version", *(s.name for s in INIT_STAGES)]
    for name, stage in stages.items():
        for dep in stage.get("do", stage).get("deps", []):
            assert dep == VERSION_FILE or dep.startswith("${"), (name, dep)  # data files only, no source paths
    help_text = CliRunner().invoke(main, ["init", "--help"]).output
    assert "Reads" in help_text and "writes" in help_text
    again = CliRunner().invoke(main, ["init", str(tmp_path / "proj")])
    assert again.exit_code != 0 and "--force" in again.output


def test_repo_demo_entry_is_the_builtin_one():
    repo = yaml.safe_load((REPO / "params.yaml").read_text())
    assert repo["datasets"]["demo"] == BUILTIN_TOP["datasets"]["demo"]  # `pipeline demo` alike in and out of a clone


def test_dvc_yaml_builds_from_the_registry():
    from pipeline.registry import pipeline_stages, render_dvc_yaml, stage

    out = dvc_yaml(INIT_STAGES)["stages"]
    assert [s.name for s in INIT_STAGES] == [s.name for s in pipeline_stages()]
    assert out["detect"]["do"]["params"] == [*stage("detect").params, "datasets.${item}"]
    # The repository's dvc.yaml, with the version file in place of the source paths.
    repo = yaml.safe_load(render_dvc_yaml())["stages"]
    for name, st in repo.items():
        code = [d for d in st["do"]["deps"] if not d.startswith("${")]
        assert out[name]["do"]["deps"] == [VERSION_FILE, *st["do"]["deps"][len(code):]], name
        assert {k: v for k, v in out[name]["do"].items() if k != "deps"} == \
            {k: v for k, v in st["do"].items() if k != "deps"}, name
    assert out["train-head"]["do"]["metrics"] == [{"${results_root}/${item}/metrics.json": {"cache": False}}]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("pipeline") is None,
                    reason="needs the dvc and pipeline commands (pip install -e '.[dev]')")
def test_init_then_dvc_repro_outside_the_repository(tmp_path):
    """About a minute: three real clips, every stage through DVC, from a folder that is not a clone."""
    videos = tmp_path / "videos"
    for label, name in [("happiness", "single_face.mp4"), ("happiness", "video_01.mp4"),
                        ("surprise", "face_noface.mov")]:
        cut_clip(VIDEOS / name, videos / label / name.replace(".mov", ".mp4"), 40)  # real, short
    proj = tmp_path / "proj"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    subprocess.run(["pipeline", "init", str(proj), "--dataset", "clips", "--root", str(videos), "--dvc"],
                   check=True, env=env, cwd=tmp_path)
    assert (proj / ".dvc").is_dir()
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["detect"].update(det_size=320)
    params["extract"].update(backbone="retinaface_mnet", shard_size=2)
    params["train_head"].update(folds=2, epochs=2, fold_workers=1)
    params["evaluate"].update(tsne=False, n_activation_examples=1)
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    res = subprocess.run(["dvc", "repro"], cwd=proj, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (proj / VERSION_FILE).read_text().strip().endswith(_version())
    for path in ("data/clips/faces.h5", "data/clips/features/index.h5", "results/clips/metrics.json",
                 "results/clips/report.md", "dvc.lock"):
        assert (proj / path).exists(), path
    status = subprocess.run(["dvc", "status"], cwd=proj, env=env, capture_output=True, text=True, check=True)
    assert "changed" not in status.stdout.replace("always changed", "")  # every data stage is up to date


def _version() -> str:
    from importlib.metadata import version

    return version("ceflnet-pipeline")
