"""README's "Exit codes" table and failure kinds against what the code does."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import (
    ConfigError,
    DatasetError,
    MissingWeightsError,
    PipelineError,
    TooManyFailures,
)
from tests.conftest import write_params

README = Path(__file__).parents[2] / "README.md"
ROOT = Path(__file__).parents[2]


def _readme_exit_codes() -> dict[int, str]:
    section = README.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (.+?) \|$", section, re.MULTILINE)}


def test_exit_code_table_matches_the_error_classes():
    table = _readme_exit_codes()
    assert sorted(table) == [0, 1, 2, 3, 4, 5]
    assert (PipelineError.exit_code, ConfigError.exit_code, DatasetError.exit_code, MissingWeightsError.exit_code,
            TooManyFailures.exit_code) == (1, 2, 3, 4, 5)
    for code, word in [(2, "configuration"), (3, "dataset root"), (4, "weights"), (5, "max_failure_fraction")]:
        assert word in table[code], (code, table[code])


def _readme_kinds() -> set[str]:
    text = README.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `failures.csv`"))
    return set(re.findall(r"`(\w+)`", row.split("kinds", 1)[1]))


def _code_kinds() -> set[str]:
    """Kind literals where a failure is made: VideoError("kind", ...), Failure(id, "stage", "kind", ...),
    VideoResult(..., kind="...") and the adapters' listing problems (id, "kind", message)."""
    patterns = [r'VideoError\("(\w+)"', r'Failure\([^,()]+, "[\w-]+", "(\w+)"', r'kind="(\w+)"',
                r'VideoResult\([^"\n]*?"(\w+)", f?"',  # detect's VideoResult(id, None, n, w, h, "kind", message)
                r'\(\w+, "(\w+)", f?"']  # the adapters' listing problems: (id, "kind", message)
    kinds = set()
    for folder in ("pipeline", "stages"):
        for py in (ROOT / folder).rglob("*.py"):
            if py.parent.name == "head" or py.stem in ("train_head", "evaluate", "ablate"):
                continue  # `kind=` there names a head, not a failure
            src = py.read_text()
            for p in patterns:
                kinds.update(re.findall(p, src))
    return kinds


@pytest.mark.slow
def test_failure_kinds_of_the_video_stages_are_documented(bad_batch):
    from pipeline.io import read_failures

    seen = {f.kind for f in read_failures(bad_batch["dir"] / "failures.csv")}
    # what the broken batch was built to produce (conftest.make_bad_batch), all documented
    assert {"unreadable", "missing", "duplicate_id", "unknown_label", "short"} <= seen <= _readme_kinds(), seen
    stage_kinds = set()
    for py in [*(ROOT / "stages" / f"{s}.py" for s in ("manifest", "detect", "resample", "extract")),
               *(ROOT / "pipeline" / f"{m}.py" for m in ("video", "facetrack", "resampling"))]:
        stage_kinds.update(re.findall(r'(?:VideoError\(|Failure\([^,()]+, "[\w-]+", |kind=)"(\w+)"', py.read_text()))
    assert stage_kinds and stage_kinds <= _readme_kinds(), stage_kinds - _readme_kinds()


def test_every_failure_kind_in_the_code_is_documented():
    # Both ways: an undocumented kind fails, and so does a documented one the patterns no longer find in the
    # code (an empty or shrinking scan cannot pass by matching nothing).
    assert _code_kinds() == _readme_kinds(), (sorted(_code_kinds() - _readme_kinds()),
                                              sorted(_readme_kinds() - _code_kinds()))


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("adapter", ["folder", "csv"])
def test_missing_dataset_root_is_one_message_exit_3_before_any_work(tmp_path, adapter):
    root = tmp_path / "nowhere" / ("list.csv" if adapter == "csv" else "")
    params = write_params(tmp_path, {"x": {"adapter": adapter, "root": str(root)}}, "x")
    res = _invoke("run", "extract", "--params", str(params))  # the whole chain, from manifest
    assert res.exit_code == 3, res.output
    assert str(root) in res.output and res.output.count("error:") == 1 and "Traceback" not in res.output
    assert not (tmp_path / "data").exists()  # nothing written


def test_bad_shard_argument_is_exit_2(tmp_path):
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x")
    assert _invoke("run", "extract", "--params", str(params), "--shard", "3/2").exit_code == 2
    assert not (tmp_path / "data").exists()


def test_missing_weights_is_exit_4_before_any_video(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x")
    res = _invoke("run", "extract", "--no-deps", "--params", str(params), "--set", "extract.weights=imagenet")
    assert res.exit_code == 4, res.output
    assert "resnet18-f37072fd.pth" in res.output and not (tmp_path / "data" / "x" / "features").exists()


def test_too_many_failures_is_exit_5_with_every_failure_recorded(tmp_path):
    from pipeline.io import read_failures

    root = tmp_path / "vids" / "happy"
    root.mkdir(parents=True)
    (root / "a.mp4").write_bytes(b"")
    (root / "b.mp4").write_text("not a video")
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path / "vids")}}, "x")
    res = _invoke("run", "detect", "--params", str(params))
    assert res.exit_code == 5, res.output
    assert "max_failure_fraction" in res.output
    fails = read_failures(tmp_path / "data" / "x" / "failures.csv")
    assert sorted((f.video_id, f.stage) for f in fails) == [("happy/a", "manifest"), ("happy/b", "manifest")]


def test_cache_verify_with_no_cache_is_exit_1(tmp_path):
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x")
    res = _invoke("cache", "verify", "--params", str(params))
    assert res.exit_code == 1 and "no shards" in res.output
