"""Issue 16 (and issue 13 §3): every user mistake gets a one-line cause and the fix, never a traceback.

Each test here failed on the code before the issue was fixed, except two controls (a valid dataset name is
accepted; umask 077 still gives 0600) that keep the refusals honest."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import PipelineError, VideoError
from tests.conftest import VIDEOS, write_params
from tests.head.conftest import tiny_params, write_synthetic_dataset

ROOT = Path(__file__).parents[2]


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


# ---------------------------------------------------------------- configuration


def test_every_set_key_is_validated_before_any_work(tmp_path):
    """`--set train-head.epochs=3` trained 120 epochs; `nosuch.key=1` and `=3` were accepted."""
    params = tiny_params(tmp_path)
    res = _invoke("run", "train-head", "--no-deps", "--params", str(params), "--set", "train-head.epochs=3",
                  "--set", "nosuch.key=1", "--set", "=3", "--set", "noequals")
    assert res.exit_code == 2, res.output
    for word in ("train-head: unknown", "did you mean train_head", "nosuch: unknown", "'=3'", "'noequals'"):
        assert word in res.output, (word, res.output)
    assert not (tmp_path / "results").exists()  # nothing ran


@pytest.mark.parametrize("name", ["../escape", "/abs/dir", ".", "", ".hidden", "a/b"])
def test_a_dataset_name_is_a_name(tmp_path, name):
    (tmp_path / "videos" / "happy").mkdir(parents=True)
    params = write_params(tmp_path, {}, "x")
    res = _invoke("run", "manifest", "--params", str(params), "--dataset", name, "--adapter", "folder",
                  "--root", str(tmp_path / "videos"))
    assert res.exit_code == 2, res.output
    assert "is not a dataset name" in res.output and "Traceback" not in res.output
    assert not list(tmp_path.rglob("manifest.csv"))


def test_a_valid_dataset_name_is_accepted(tmp_path):
    params = write_params(tmp_path, {}, "x")
    cfg = load_config(params, dataset="my-set_1.v2", adapter="folder", root=str(tmp_path))
    assert cfg.dataset_dir().name == "my-set_1.v2"


@pytest.mark.parametrize("flag", ["--data-root", "--results-root"])
def test_a_root_that_is_a_file_is_exit_2(tmp_path, flag):
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x")
    (tmp_path / "afile").write_text("not a folder")
    res = _invoke("run", "manifest", "--params", str(params), flag, str(tmp_path / "afile"))
    assert res.exit_code == 2 and "is a file, not a folder" in res.output, res.output


def test_more_folds_than_any_class_has_videos_is_exit_2_with_the_fix(tmp_path):
    """scikit-learn's `n_splits=4 cannot be greater than the number of members in each class` traceback."""
    write_synthetic_dataset(tmp_path / "data", n_videos=6, n_subjects=6, dim=8)  # 3 classes x 2 videos
    params = tiny_params(tmp_path)
    res = _invoke("run", "train-head", "--no-deps", "--params", str(params), "--folds", "4")
    assert res.exit_code == 2, res.output
    assert "no class has 4 videos" in res.output and "--folds 2" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def _can_mount_read_only() -> bool:
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


def _read_only_run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`pipeline ...` with `folder` bind-mounted read-only (a user and mount namespace: EROFS, whoever runs it)."""
    import shlex

    cmd = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "pipeline.cli", *args))
    f = shlex.quote(str(folder))
    return subprocess.run(["unshare", "-rm", "bash", "-c", f"mount --bind {f} {f} && mount -o remount,ro,bind {f} {f} "
                           f"&& exec {cmd}"], capture_output=True, text=True, timeout=600)


MISTAKES = {  # case -> (arguments after `run`, exit code, words the message must hold)
    "folds 1": (["train-head", "--no-deps", "--folds", "1"], 2, ["train_head.folds", "at least 2 folds"]),
    "folds 0": (["train-head", "--no-deps", "--folds", "0"], 2, ["train_head.folds", "at least 2 folds"]),
    "n_frames 1": (["extract", "--no-deps", "--set", "resample.n_frames=1"], 2,
                   ["resample.n_frames", "set resample.n_frames >= 104"]),
    # Weights that do not read are weights problems: the documented exit 4 (README: Exit codes).
    "text .pth": (["extract", "--no-deps", "--set", "extract.weights={text}"], 4,
                  ["cannot read checkpoint", "torch.save(model.state_dict(), path)"]),
    "empty .pth": (["extract", "--no-deps", "--set", "extract.weights={empty}"], 4,
                   ["cannot read checkpoint", "empty file"]),
    "read-only data root": (["manifest"], 2, ["Read-only file system", "--data-root"]),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_user_mistakes_of_issue_29_are_exit_codes_with_cause_and_fix(tmp_path, case):
    args, code, words = MISTAKES[case]
    (tmp_path / "videos" / "happiness").mkdir(parents=True)
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path / "videos")}}, "x",
                          extract={"backbone": "resnet18", "device": "cpu"})
    (tmp_path / "weights.pth").write_text("these are not weights\n" * 20)
    (tmp_path / "empty.pth").write_bytes(b"")
    args = [a.format(text=tmp_path / "weights.pth", empty=tmp_path / "empty.pth") for a in args]
    if case == "read-only data root":
        if not _can_mount_read_only():
            pytest.skip("no user namespaces here to mount a folder read-only")
        (tmp_path / "data").mkdir()
        res = _read_only_run(tmp_path / "data", "run", *args, "--params", str(params))
        exit_code, output = res.returncode, res.stdout + res.stderr
    else:
        res = _invoke("run", *args, "--params", str(params))
        exit_code, output = res.exit_code, res.output
    assert exit_code == code, output[-3000:]
    assert all(w in output for w in words) and "Traceback" not in output, output[-3000:]


@pytest.mark.slow
def test_a_finished_cache_on_read_only_storage_is_checked_without_writing(tmp_path):
    """Issue 29: the whole upstream chain of train-head rechecked on a finished cache mounted read-only,
    after the dataset's files were touched (new mtimes, as a copy makes): manifest is recomputed, finds the
    same rows and rewrites nothing; the stages downstream stay current."""
    import shutil

    if not _can_mount_read_only():
        pytest.skip("no user namespaces here to mount a folder read-only")
    videos = tmp_path / "videos" / "happiness"
    videos.mkdir(parents=True)
    shutil.copy(VIDEOS / "single_face.mp4", videos / "a.mp4")
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path / "videos")}}, "x",
                          detect={"det_size": 320, "qc_samples": 1},
                          extract={"backbone": "retinaface_mnet", "weights": "random", "workers": 0, "device": "cpu"})
    args = ("run", "extract", "--params", str(params))
    assert _invoke(*args).exit_code == 0
    data = tmp_path / "data"
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
    os.utime(videos / "a.mp4")  # the listing's fingerprint changes: manifest must run again
    res = _read_only_run(data, *args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "record is left as it was" in res.stderr  # manifest's, once
    for s in ("detect", "resample", "extract"):
        assert f'"stage": "{s}"' not in res.stdout or '"skipped"' in res.stdout
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- evaluate


def test_evaluate_checks_its_inputs_before_running_upstream_stages(tmp_path):
    """It ran manifest/detect/extract first (hours), then named `pipeline run train_head`."""
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path / "no-such-root")}}, "x")
    res = _invoke("run", "evaluate", "--params", str(params))
    assert res.exit_code == 1, res.output  # not 3: the missing dataset root was never looked at
    assert "predictions.csv" in res.output and "`pipeline run train-head --dataset x`" in res.output
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_evaluate_takes_its_folds_from_the_checkpoints(tmp_path):
    """After `train-head --folds 2`, a plain evaluate refused: `train_head.folds=10 but ... 6 subjects`."""
    write_synthetic_dataset(tmp_path / "data", n_videos=12, n_subjects=6, dim=8)
    params = tiny_params(tmp_path, folds=10, epochs=1, hidden=8, threads=1, fold_workers=1)
    assert _invoke("run", "train-head", "--no-deps", "--params", str(params), "--folds", "2").exit_code == 0
    res = _invoke("run", "evaluate", "--params", str(params))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{"):])["checkpoint_agreement"] == 100.0


def _hints() -> set[str]:
    hints = set()
    for folder in ("pipeline", "stages", "cache"):
        for py in (ROOT / folder).rglob("*.py"):
            hints.update(re.findall(r"`(pipeline (?:run|cache|datasets|demo|predict|report)\b[^`]*)`", py.read_text()))
    return hints


def _field_value(m: re.Match) -> str:
    """A plausible value for an f-string field of a hint: a stage for `{stage}`, a number otherwise."""
    return "extract" if "stage" in m[1] else "x" if "name" in m[1] or "dataset" in m[1] else "1"


def test_every_command_the_code_prints_is_a_real_command(tmp_path):
    """Parses each hint with the CLI itself (stage names, options, their types) without running it."""
    hints = _hints()
    assert any("train-head" in h for h in hints) and len(hints) >= 8
    video = VIDEOS / "single_face.mp4"
    for hint in sorted(hints):
        args = hint.split()[1:]
        args = [re.sub(r"\{([^}]*)\}", _field_value, a) for a in args if a not in ("...",)]  # f-string fields
        args = [str(video) if a == "VIDEO..." else str(tmp_path) if a == "RUN_DIR" else a for a in args]
        with main.make_context("pipeline", args[:1] or ["--help"]) as ctx:
            cmd_name, cmd, rest = main.resolve_command(ctx, args)
            while isinstance(cmd, click.Group) and rest:
                sub = cmd.make_context(cmd_name, rest, parent=ctx)
                cmd_name, cmd, rest = cmd.resolve_command(sub, rest)
                ctx = sub
            if not rest and len(args) == 1:
                continue  # a bare mention of a command (`pipeline predict`): resolved above
            try:
                cmd.make_context(cmd_name, rest, parent=ctx)
            except click.UsageError as err:
                pytest.fail(f"hint `{hint}` is not a valid command: {err}")


# ---------------------------------------------------------------- predict


def test_predict_with_a_truncated_checkpoint_is_one_message(tmp_path):
    """`PytorchStreamReader failed` traceback before."""
    model = tmp_path / "model"
    model.mkdir()
    torch.save({"x": torch.zeros(1000)}, model / "fold-1.pt")
    data = (model / "fold-1.pt").read_bytes()
    (model / "fold-1.pt").write_bytes(data[: len(data) // 2])
    res = _invoke("predict", str(VIDEOS / "single_face.mp4"), "--model", str(model), "--out", str(tmp_path / "o"),
                  "--device", "cpu")
    assert res.exit_code == 1, res.output
    assert "cannot read checkpoint" in res.output and "fold-1.pt" in res.output
    assert not isinstance(res.exception, RuntimeError)


def test_predict_figures_are_unique_and_every_input_is_reported(tmp_path, monkeypatch):
    """Two `clip.mp4` overwrote each other's figure; a faceless video was missing from predictions.json.
    The predictor (detector + backbone + heads) is replaced: this tests the command around it."""
    from pipeline.commands import predict as cmd

    videos = []
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
        videos.append(tmp_path / sub / "clip.mp4")
        videos[-1].write_bytes(b"x")

    class FakePredictor:
        def __init__(self, model_dir, device):
            pass

        def predict(self, video, fig):
            if video.parent.name == "c":
                raise VideoError("no_face", "no face in any frame")
            fig.write_bytes(video.parent.name.encode())
            return cmd.Prediction(str(video), "happiness", {"happiness": 1.0}, 0, (0, 1), (0.0, 0.1), [[1.0]],
                                  [(0, 1)], str(fig), 10.0)

    monkeypatch.setattr(cmd, "Predictor", FakePredictor)
    out = tmp_path / "out"
    res = _invoke("predict", *map(str, videos), "--model", str(tmp_path), "--out", str(out))
    assert res.exit_code == 1  # one video failed
    entries = json.loads((out / "predictions.json").read_text())
    assert [e["status"] for e in entries] == ["ok", "ok", "no_face"]
    assert "no face" in entries[2]["reason"] and entries[2]["video"] == str(videos[2])
    figs = [Path(e["figure"]) for e in entries[:2]]
    assert len(set(figs)) == 2 and [f.read_bytes() for f in figs] == [b"a", b"b"]
    assert cmd.figure_names([Path("x/one.mp4"), Path("y/two.mp4")]) == ["one_clips.png", "two_clips.png"]


# ---------------------------------------------------------------- workers, signals, files


def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("pool", ["extract", "joblib", "manager"])
def test_workers_exit_when_their_parent_is_killed(tmp_path, pool):
    """Orphans of `kill -9` stayed idle at ~490 MB for hours. The parent starts the same pools as extract
    (pipeline.workers.process_pool) and as the CLI's joblib stages (orphan_safe_workers), or train-head's
    progress manager, then is killed."""
    script = {
        "extract": "from pipeline.workers import process_pool\n"
                   "pool = process_pool(2)\n"
                   "[f.result() for f in [pool.submit(os.getpid) for _ in range(4)]]\n",
        "joblib": "from joblib import Parallel, delayed\n"
                  "from pipeline.workers import orphan_safe_workers\n"
                  "with orphan_safe_workers():\n"
                  "    Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(4))\n",
        "manager": "from pipeline.workers import manager\n"
                   "held = manager()\n"
                   "m = held.__enter__()\n"
                   "m.Queue().put(1)\n",
    }[pool]
    proc = subprocess.Popen([sys.executable, "-c", "import os, sys, time\n" + script +
                             "print('ready', flush=True)\ntime.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        workers = _children(proc.pid)
        assert workers, "no worker processes started"
        proc.kill()
        proc.wait()
        deadline = time.time() + 6
        while _alive(workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not _alive(workers), f"orphaned workers still alive: {_alive(workers)}"
    finally:
        for p in _alive(_children(proc.pid)):
            os.kill(p, 9)
        proc.kill()


def test_a_killed_runs_forked_child_does_not_keep_its_folder_locked(tmp_path):
    """An `flock` is shared with every forked child: train-head's progress manager, forked while the run held
    its folder, kept it locked after `kill -9` of the run, and the rerun was refused (CI). The parent here
    takes the lock, forks a child that outlives it, and is killed; the folder must be free at once."""
    from pipeline.io import run_lock

    folder = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-c",
                             "import multiprocessing, sys, time\n"
                             "from pipeline.io import run_lock\n"
                             "def child(started):\n"
                             "    started.set()\n"  # after the fork hooks: the child is past the point under test
                             "    time.sleep(60)\n"
                             f"with run_lock({str(folder)!r}):\n"
                             "    ctx = multiprocessing.get_context('fork')\n"
                             "    started = ctx.Event()\n"
                             "    proc = ctx.Process(target=child, args=(started,))\n"
                             "    proc.start()\n"
                             "    assert started.wait(60)\n"
                             "    print(proc.pid, flush=True)\n"
                             "    time.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        proc.kill()
        proc.wait()
        assert _alive([child]), "the forked child should outlive its parent here"
        with run_lock(folder):  # raises FolderBusy if the child still held the parent's lock
            pass
    finally:
        os.kill(child, 9)
        proc.kill()


def test_ctrl_c_exits_130(tmp_path, monkeypatch):
    from stages import manifest

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(manifest, "work", interrupted)  # Ctrl-C inside the stage's work
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x")
    res = _invoke("run", "manifest", "--params", str(params))
    assert res.exit_code == 130 and "interrupted" in res.output, res.output


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_respect_the_umask(tmp_path, umask, mode):
    """Every output was 0600 (mkstemp's mode) whatever the umask."""
    from pipeline.io import atomic_path

    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == mode


def test_ablation_first_row_names_the_cache_backbone(tmp_path):
    from pipeline.registry import stage

    write_synthetic_dataset(tmp_path / "data", n_videos=12, n_subjects=6, dim=8)
    cfg = load_config(tiny_params(tmp_path, epochs=1, hidden=8, threads=1, fold_workers=1), dataset="synth")
    out = stage("ablate").run(cfg, dataset="synth", kinds=("meanpool",))
    assert out["rows"][0]["model"] == "synthetic features (mean-pool + linear)"
    assert "ResNet-18" not in (cfg.results_dir("synth") / "ablation.md").read_text().split("|---|", 1)[1]


def test_changing_shard_size_keeps_the_extract_signature(tmp_path):
    """A changed `extract.shard_size` re-extracted every video (it only regroups videos into files)."""
    from pipeline.state import signature

    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x")
    a = signature(load_config(params), "x", "extract")
    assert a == signature(load_config(params, overrides=["extract.shard_size=7"]), "x", "extract")
    assert a != signature(load_config(params, overrides=["extract.margin=0.25"]), "x", "extract")


def test_no_deps_says_when_the_upstream_no_longer_matches(tmp_path, monkeypatch):
    """`extract --no-deps --set detect.det_size=480` said "up to date" and nothing else."""
    from pipeline.registry import Stage
    from pipeline.state import mark_done, signature

    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x")
    cfg = load_config(params)
    for stage in ("detect", "resample"):
        mark_done(cfg, "x", stage, signature(cfg, "x", stage), {})
    monkeypatch.setattr(Stage, "run", lambda self, cfg, **kw: {"skipped": "up to date"})
    same = _invoke("run", "extract", "--no-deps", "--params", str(params))
    assert same.exit_code == 0 and "no longer match" not in same.output
    res = _invoke("run", "extract", "--no-deps", "--params", str(params), "--set", "detect.det_size=480")
    assert res.exit_code == 0 and "upstream detect no longer match" in res.output, res.output


# ---------------------------------------------------------------- issue 13 §3: nothing silent


def test_torch_detector_asked_for_cuda_without_a_gpu_says_so():
    from pipeline.detector import RetinaFaceDetector

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(PipelineError, match="detect.device=cuda but torch sees no CUDA device"):
        RetinaFaceDetector(device="cuda", runtime="torch")


def test_mnet_on_cpu_records_the_precision_that_ran(caplog):
    from pipeline.config import ExtractConfig
    from pipeline.features import build_extractor

    ex = build_extractor(ExtractConfig(backbone="retinaface_mnet", precision="bf16", device="cpu", threads=1))
    assert ex.provenance()["precision"] == "fp32" and ex.autocast_dtype is None
    assert "does not apply to retinaface_mnet" in caplog.text


def test_an_unreadable_shard_is_reported_not_deleted(tmp_path, monkeypatch):
    """An OSError while checking a shard deleted it (a flaky mount would lose finished work)."""
    import h5py

    from stages import extract

    write_synthetic_dataset(tmp_path / "data", n_videos=4, n_subjects=2, dim=8)
    shard = tmp_path / "data" / "synth" / "features" / "shard-00000.h5"

    def flaky(*a, **kw):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(h5py, "File", flaky)
    with pytest.raises(PipelineError, match="nothing was deleted"):
        extract.verified_shard(shard, "sig")
    assert shard.exists()


@pytest.mark.parametrize("module,importer", [("pipeline.adapters.mmi", "pipeline.adapters"),
                                             ("pipeline.commands.predict", "pipeline.cli")])
def test_a_missing_module_is_an_error_not_a_silent_skip(module, importer):
    """`except ModuleNotFoundError: continue` made a renamed adapter or command vanish without a word."""
    code = f"import sys; sys.modules[{module!r}] = None; import {importer}"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr, res.stderr[-500:]
