"""README "Scale-out": the Dask recipe, run as written on a 2-worker LocalCluster over the real clips."""
from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import pytest

from tests.conftest import VIDEOS, cut_clip, write_params

REPO = Path(__file__).resolve().parent.parent
# What the test puts in place of the README's placeholders (each must appear in the block, or the test fails).
SUBSTITUTIONS = {'"tcp://scheduler:8786"': "SCHEDULER", '"/shared/ceflnet"': "PROJECT", '"dfew"': '"clips"',
                 ", 16, ": ", 2, "}


def readme_dask_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Scale-out"):text.index("\n## ", text.index("## Scale-out") + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Scale-out section should hold exactly one python block (the tested recipe)"
    return blocks[0]


def test_readme_recipe_has_the_placeholders_the_test_substitutes():
    code = readme_dask_block()
    for placeholder in SUBSTITUTIONS:
        assert placeholder in code, placeholder
    compile(code, "README.md", "exec")


@pytest.mark.slow
def test_readme_dask_recipe_on_a_local_cluster(tmp_path, monkeypatch):
    """About a minute: manifest, detect in 2 slices + merge, resample, extract in 2 slices + merge."""
    distributed = pytest.importorskip("distributed")
    videos = tmp_path / "videos"
    for label, name in [("happiness", "single_face.mp4"), ("happiness", "video_01.mp4"),
                        ("surprise", "face_noface.mov"), ("neutral", "no_face.mp4")]:
        cut_clip(VIDEOS / name, videos / label / name.replace(".mov", ".mp4"), 30)  # real, short
    project = tmp_path / "project"
    project.mkdir()
    write_params(project, {"clips": {"adapter": "folder", "root": str(videos)}}, "clips",
                 detect={"det_size": 320}, extract={"backbone": "retinaface_mnet", "shard_size": 1, "workers": 0})
    # The workers' subprocesses import the tree under test.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    code = readme_dask_block()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        for placeholder, value in SUBSTITUTIONS.items():
            code = code.replace(placeholder, value)
        namespace = {"SCHEDULER": cluster.scheduler_address, "PROJECT": str(project)}
        try:
            exec(compile(code, "README.md", "exec"), namespace)
        finally:
            if "client" in namespace:
                namespace["client"].close()
    data = project / "data" / "clips"
    with h5py.File(data / "faces.h5", "r") as f:
        assert {"happiness", "surprise"} <= set(f)
    with h5py.File(data / "features" / "index.h5", "r") as f:
        assert len(f["video_id"]) == 3  # no_face.mp4 is a recorded failure, the rest cached
    shards = sorted(p.name for p in (data / "features").glob("shard-*.h5"))
    assert any(n.startswith("shard-000of002") for n in shards) and any(n.startswith("shard-001of002") for n in shards)
    assert "neutral/no_face,detect,no_face" in (data / "failures.csv").read_text()



def test_only_detect_and_extract_take_a_shard(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x")
    res = CliRunner().invoke(main, ["run", "resample", "--params", str(params), "--shard", "0/2"])
    assert res.exit_code == 2 and "only detect and extract" in res.output
    assert not (tmp_path / "data").exists()  # refused before any stage ran
    assert "K counted from 0" in " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
