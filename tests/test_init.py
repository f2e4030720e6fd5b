"""The pip-installed user: no params.yaml → built-in defaults; `pipeline init` → a project that `dvc repro` runs
outside this repository."""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.commands.demo import DEMO_MINUTES
from pipeline.commands.init import VERSION_FILE, dvc_yaml_text
from pipeline.registry import pipeline_stages
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
    res = CliRunner().invoke(main, ["init", str(tmp_path / "proj"), "--no-dvc"])
    assert res.exit_code == 0, res.output
    written = load_config(tmp_path / "proj" / "params.yaml")
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    builtin = load_config(None)
    for key in ("dataset", "datasets", "families", "repro", "manifest", "detect", "resample", "train_head", "evaluate"):
        assert getattr(written, key) == getattr(builtin, key), key
    # All but the backbone: init's runs offline (the one that ships), the paper's is one comment away.
    assert written.extract == dataclasses.replace(builtin.extract, backbone="retinaface_mnet")
    text = (tmp_path / "proj" / "params.yaml").read_text()
    assert "  # Frames are resized so their long side" in text  # field docstrings become comments
    stages = yaml.safe_load((tmp_path / "proj" / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["version", *(s.name for s in pipeline_stages())]
    for name, stage in stages.items():
        for dep in stage.get("do", stage).get("deps", []):
            assert dep == VERSION_FILE or dep.startswith("${"), (name, dep)  # data files only, no source paths
    help_text = CliRunner().invoke(main, ["init", "--help"]).output
    assert "Reads" in help_text and "writes" in help_text
    again = CliRunner().invoke(main, ["init", str(tmp_path / "proj"), "--no-dvc"])
    assert again.exit_code != 0 and "--force" in again.output


def test_repo_demo_entry_is_the_builtin_one():
    repo = yaml.safe_load((REPO / "params.yaml").read_text())
    assert repo["datasets"]["demo"] == BUILTIN_TOP["datasets"]["demo"]  # `pipeline demo` alike in and out of a clone


def test_dvc_yaml_builds_from_the_registry():
    from pipeline.registry import render_dvc_yaml, stage

    out = yaml.safe_load(dvc_yaml_text())["stages"]
    assert list(out) == ["version", *(s.name for s in pipeline_stages())]
    assert out["detect"]["do"]["params"] == [*stage("detect").params, "datasets.${item}"]
    # The repository's dvc.yaml, with the version file in place of the source paths.
    repo = yaml.safe_load(render_dvc_yaml())["stages"]
    for name, st in repo.items():
        code = [d for d in st["do"]["deps"] if not d.startswith("${")]
        assert out[name]["do"]["deps"] == [VERSION_FILE, *st["do"]["deps"][len(code):]], name
        assert {k: v for k, v in out[name]["do"].items() if k != "deps"} == \
            {k: v for k, v in st["do"].items() if k != "deps"}, name
    assert out["train-head"]["do"]["metrics"] == [{"${results_root}/${item}/metrics.json": {"cache": False, "persist": True}}]


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
    # Once the stages have made their outputs, plain `dvc repro --dry` works (treeverse/dvc#9818 bites only
    # before the first run) and would rerun nothing but the always-run stages.
    dry = subprocess.run(["dvc", "repro", "--dry"], cwd=proj, env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    ran = set(re.findall(r"Running stage '([\w-]+)", dry.stdout))
    assert ran == {"version", "manifest"}, dry.stdout


def _version() -> str:
    from importlib.metadata import version

    return version("ceflnet-pipeline")


HAS_DVC = pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None,
                             reason="needs the dvc and git commands (pip install -e '.[dev]', apt install git)")


def _ignored(repo: Path, *paths: str) -> set[str]:
    res = subprocess.run(["git", "check-ignore", *paths], cwd=repo, capture_output=True, text=True)
    return set(res.stdout.split())


@pytest.mark.slow  # git, dvc init and dvc repro --dry (7 s)
@HAS_DVC
def test_init_makes_a_git_and_dvc_project_experiments_work_in(tmp_path):
    """`dvc exp run` needs git: init creates the repository (dvc init with SCM, not --no-scm), a .gitignore
    keeps data and heavy results out of `git add -A`, and `dvc repro --dry` finds pipeline-version.txt."""
    proj = tmp_path / "proj"
    res = CliRunner().invoke(main, ["init", str(proj)])
    assert res.exit_code == 0, res.output
    assert (proj / ".git").is_dir() and (proj / ".dvc").is_dir()
    assert "no_scm" not in (proj / ".dvc" / "config").read_text()
    assert "ran git init" in res.output and "ran dvc init" in res.output
    heavy = ["data/demo/faces.h5", "data/demo/raw/anger/a.mp4", "data/demo/features/shard-00000.h5",
             "results/demo/checkpoints/fold-0.pt", "results/demo/training_curves.png",
             "results/demo/predictions.csv", "results/demo/predict/x_clips.png"]
    kept = ["params.yaml", "dvc.yaml", "dvc.lock", "pipeline-version.txt", "results/demo/metrics.json",
            "results/demo/provenance.json", "results/demo/history/fold-0.csv"]
    assert _ignored(proj, *heavy, *kept) == set(heavy)
    assert (proj / VERSION_FILE).read_text().strip() == f"pipeline, version {_version()}"
    dry = subprocess.run(["dvc", "repro", "--dry"], cwd=proj, capture_output=True, text=True)
    assert f"{VERSION_FILE}'" not in dry.stdout + dry.stderr  # "No such file ... pipeline-version.txt'": gone: the version file exists from init on
    # DVC itself still hashes a stage's data deps in a dry run's run-cache lookup (treeverse/dvc#9818, open):
    # before the first run, plain --dry stops only at a file an earlier stage makes (never one init writes);
    # with --force it skips that lookup and lists every stage's command (docs/experiments.md says so).
    if dry.returncode != 0:
        missing = re.search(r"No such file or directory: '([^']+)'", dry.stderr)
        assert missing, dry.stdout + dry.stderr
        made_by_a_stage = {str(proj / "data" / "demo" / Path(o.path).relative_to("{data}"))
                           for st in pipeline_stages() for o in st.outs if o.path.startswith("{data}")}
        assert missing.group(1) in made_by_a_stage, dry.stderr
    dry = subprocess.run(["dvc", "repro", "--dry", "--force"], cwd=proj, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert all(f"pipeline run {s.name} --dataset demo" in dry.stdout for s in pipeline_stages())


@pytest.mark.slow  # git init and dvc init (3 s)
@HAS_DVC
def test_init_inside_a_repository_uses_it(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".gitignore").write_text("mine.log\n")
    res = CliRunner().invoke(main, ["init", str(tmp_path / "sub")])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "sub" / ".git").exists() and (tmp_path / "sub" / ".dvc").is_dir()
    assert "ran git init" not in res.output and "ran dvc init --subdir" in res.output
    assert _ignored(tmp_path, "sub/data/demo/faces.h5", "sub/params.yaml") == {"sub/data/demo/faces.h5"}
    # Again with --force in the project itself: the user's lines stay, ours are not doubled, no "cd . &&".
    (tmp_path / "sub" / ".gitignore").write_text("notes/\n")
    monkeypatch.chdir(tmp_path / "sub")
    res = CliRunner().invoke(main, ["init", ".", "--force", "--dataset", "mine", "--root", str(VIDEOS)])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "sub" / ".gitignore").read_text().splitlines()
    assert lines[0] == "notes/" and lines.count("/data/") == 1
    assert "cd ." not in res.output and "next: dvc repro" in res.output


def test_init_params_run_offline_and_show_how_to_add_a_dataset(tmp_path):
    from pipeline.backbones.resnet import imagenet_path

    res = CliRunner().invoke(main, ["init", str(tmp_path), "--no-dvc"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "params.yaml").read_text()
    params = yaml.safe_load(text)
    assert params["extract"]["backbone"] == "retinaface_mnet"
    assert "# backbone: resnet18" in text and str(imagenet_path().parent) in text and imagenet_path().name in text
    assert "  # mine:\n  #   adapter: folder\n  #   root: /path/to/videos" in text
    assert "BOTH `dataset:`" in text and "`repro:`" in text
    assert "repro:" in text and "\n- demo\n" in text  # block style, as `dvc exp run -S` writes it
    # The example entry, uncommented, is a valid dataset once dataset/repro name it.
    example = text.replace("  # mine:\n  #   adapter: folder\n  #   root: /path/to/videos",
                           f"  mine:\n    adapter: folder\n    root: {VIDEOS}")
    (tmp_path / "params.yaml").write_text(example.replace("dataset: demo", "dataset: mine"))
    cfg = load_config(tmp_path / "params.yaml")
    assert cfg.dataset == "mine" and cfg.datasets["mine"].adapter == "folder"


def test_init_next_steps_fit_what_was_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["init", ".", "--no-dvc"])
    assert res.exit_code == 0, res.output
    assert "cd ." not in res.output
    assert "next: dvc repro" not in res.output  # no dataset: dvc repro is the demo, said as such
    assert f"about {DEMO_MINUTES} minutes" in res.output and "pipeline demo --quick" in res.output
    assert "--dataset NAME --root" in res.output
    res = CliRunner().invoke(main, ["init", "proj", "--no-dvc", "--dataset", "mine", "--root", str(VIDEOS)])
    assert res.exit_code == 0, res.output
    assert "next: cd proj && pipeline run evaluate --dataset mine" in res.output


@pytest.mark.parametrize("args, message", [
    (["--dataset", "a;touch x", "--root", "."], "not a dataset name"),
    (["--dataset", "bad name", "--root", "."], "not a dataset name"),
    (["--dataset", "../up", "--root", "."], "not a dataset name"),
    (["--dataset", "mine", "--root", ".", "--adapter", "nope"], "unknown adapter"),
])
def test_init_refuses_bad_names_before_writing(tmp_path, monkeypatch, args, message):
    """A dataset name reaches dvc.yaml's shell commands (`--dataset ${item}`) and folder names: refused
    (exit 2) where it enters, before anything is written (issue 29)."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["init", "proj", *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "proj").exists() and not (tmp_path / "x").exists()


def test_init_under_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    res = CliRunner().invoke(main, ["init", str(tmp_path / "afile" / "sub")])
    assert res.exit_code == 2 and "afile is a file" in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
