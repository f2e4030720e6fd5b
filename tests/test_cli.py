"""The command line: help texts, configuration errors, exit codes, the adapter list."""
from __future__ import annotations

from click.testing import CliRunner

from pipeline.cli import main
from pipeline.registry import STAGES
from tests.conftest import write_params


def test_every_command_says_what_it_reads_and_writes():
    runner = CliRunner()
    out = runner.invoke(main, ["run", "--help"]).output
    for stage in STAGES:
        assert f"{stage.name}: {stage.summary[:30]}" in " ".join(out.split())
    assert "Reads" in out and "writes" in out
    for cmd in (["demo"], ["predict"], ["cache", "verify"], ["cache", "info"], ["datasets"], ["report", "complexity"]):
        res = runner.invoke(main, [*cmd, "--help"])
        assert res.exit_code == 0, cmd
        assert "Reads" in res.output and "writes" in res.output, cmd


def test_invalid_config_lists_every_problem_before_work(tmp_path):
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path / "nowhere")}}, "x")
    res = CliRunner().invoke(main, ["run", "detect", "--params", str(params), "--set", "detect.stride=0",
                                    "--set", "extract.margin=9", "--set", "detect.bogus=1"])
    assert res.exit_code == 2
    for key in ("detect.stride", "extract.margin", "detect.bogus"):
        assert key in res.output
    assert not (tmp_path / "data").exists()


def test_missing_root_is_one_message_exit_3(tmp_path):
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path / "nowhere")}}, "x")
    res = CliRunner().invoke(main, ["run", "manifest", "--params", str(params)])
    assert res.exit_code == 3 and "nowhere" in res.output and "does not exist" in res.output


def test_adapter_and_root_flags_process_any_folder(tmp_path):
    from tests.conftest import VIDEOS, cut_clip

    cut_clip(VIDEOS / "single_face.mp4", tmp_path / "videos" / "happy" / "a.mp4", 5)
    params = write_params(tmp_path, {}, "none")
    res = CliRunner().invoke(main, ["run", "manifest", "--params", str(params), "--dataset", "mine",
                                    "--adapter", "folder", "--root", str(tmp_path / "videos")])
    assert res.exit_code == 0, res.output
    from pipeline.io import read_manifest

    rows = read_manifest(tmp_path / "data" / "mine" / "manifest.csv")
    assert [(r.video_id, r.label, r.n_frames) for r in rows] == [("happy/a", "happiness", 5)]


def test_datasets_lists_every_adapter():
    out = CliRunner().invoke(main, ["datasets"]).output
    for name in ("mmi", "bu4dfe", "afew", "dfew", "ckplus", "oulu", "ferv39k", "mafw", "folder", "csv", "demo"):
        assert f"\n{name}" in "\n" + out
