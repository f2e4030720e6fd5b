"""SIGKILL in detect and train-head, and a disk that fills up mid-write: the rerun completes and equals
an uninterrupted run; nothing half-written ever sits under a final name. (Extract's own kill test is
tests/stages/test_extract.py::test_killed_mid_shard_resumes_to_identical_features.)"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cache.reader import load_cache
from cache.store import list_shards
from pipeline.config import load_config
from pipeline.io import read_failures
from tests.conftest import EXTRACTED, copy_dataset

FACE_FIELDS = ("boxes", "landmarks", "scores", "flags")


def cli(stage: str, params: Path, data_root: Path, *extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", stage, "--no-deps", "--params", str(params),
                             "--data-root", str(data_root), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out[out.index("{"):])


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL `proc` as soon as `ready()` holds; fails if the process ended first (nothing was tested)."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the run finished before the kill point"
        assert time.time() < deadline
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before the kill point"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def faces_arrays(path: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "boxes" in obj:
                out[name] = {k: obj[k][:] for k in FACE_FIELDS} | {"n_frames": obj.attrs["n_frames"]}
        f.visititems(visit)
    return out


def no_visible_partials(folder: Path) -> None:
    """Temporaries are hidden `.name.XXXX.tmp`; everything else must be complete."""
    for p in folder.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            assert not p.name.endswith(".tmp"), p


@pytest.mark.slow
def test_detect_killed_after_first_part_resumes_to_the_same_faces(bad_batch, tmp_path):
    src = bad_batch["dir"]
    copy_dataset(src, tmp_path, without=("faces.h5", ".detect-parts", "detect.json", "resample.json", "features",
                                          "extract.json", "qc"))
    parts = tmp_path / "bad" / ".detect-parts"
    proc = cli("detect", bad_batch["params"], tmp_path)
    kill_when(proc, lambda: parts.exists() and any(p.suffix == ".npz" for p in parts.iterdir()))
    assert not (tmp_path / "bad" / "faces.h5").exists()  # never a partial faces.h5
    n_parts = len(list(parts.glob("*.npz")))
    assert 1 <= n_parts < 10
    summary = finish(cli("detect", bad_batch["params"], tmp_path))
    assert summary["resumed"] == n_parts and summary["resumed"] + summary["detected_now"] == 10
    assert not list(parts.glob(".*.tmp"))
    rerun, clean = faces_arrays(tmp_path / "bad" / "faces.h5"), faces_arrays(src / "faces.h5")
    assert sorted(rerun) == sorted(clean)  # no video missing or duplicated
    for vid in clean:
        if vid == "vanished/clip":  # its file was replaced by a 5-frame one after the first detect
            assert rerun[vid]["n_frames"] == 5
            continue
        for k in (*FACE_FIELDS, "n_frames"):
            np.testing.assert_array_equal(rerun[vid][k], clean[vid][k], err_msg=f"{vid}/{k}")
    detect_rows = lambda d: sorted((f.video_id, f.kind) for f in read_failures(d / "failures.csv") if f.stage == "detect")
    assert detect_rows(tmp_path / "bad") == detect_rows(src)


@pytest.fixture(scope="module")
def synthetic_roots(tmp_path_factory):
    """Two data roots holding the same tiny synthetic cache, and a params.yaml."""
    from tests.head.conftest import tiny_params, write_synthetic_dataset

    base = tmp_path_factory.mktemp("head_crash")
    for name in ("a", "b"):
        write_synthetic_dataset(base / name / "data", n_videos=24, n_subjects=8, dim=16)
    return base, tiny_params(base, threads=1)


HEAD_ARGS = ("--dataset", "synth", "--set", "train_head.epochs=3", "--set", "train_head.folds=2")


def _train(base: Path, params: Path, name: str) -> subprocess.Popen:
    return cli("train-head", params, base / name / "data", *HEAD_ARGS, "--results-root", str(base / name / "results"))


@pytest.mark.slow
def test_train_head_killed_during_training_reruns_to_the_same_results(synthetic_roots):
    import torch

    from pipeline.registry import stage

    base, params = synthetic_roots
    cfg = load_config(params, dataset="synth", overrides=HEAD_ARGS[3::2], data_root=str(base / "a" / "data"),
                      results_root=str(base / "a" / "results"))
    stage("train-head").run(cfg, dataset="synth")  # the uninterrupted run, in process
    proc = _train(base, params, "b")
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    # tqdm draws the fold bar when training starts; kill then (the results folder is written at the end).
    kill_when(proc, lambda: "train-head synth" in "".join(seen))
    out_b = base / "b" / "results" / "synth"
    if out_b.exists():
        no_visible_partials(out_b)
        for p in out_b.rglob("fold-*.pt"):
            torch.load(p, weights_only=False)
    finish(_train(base, params, "b"))
    out_a = base / "a" / "results" / "synth"
    ma, mb = (json.loads((o / "metrics.json").read_text()) for o in (out_a, out_b))
    for key in ("war", "uar", "per_fold", "per_class_recall", "best_epoch"):
        assert ma[key] == mb[key], key
    assert (out_a / "predictions.csv").read_bytes() == (out_b / "predictions.csv").read_bytes()
    checkpoints = sorted(p.relative_to(out_a) for p in out_a.rglob("fold-*.pt"))
    assert len(checkpoints) == 2 and checkpoints == sorted(p.relative_to(out_b) for p in out_b.rglob("fold-*.pt"))
    for rel in checkpoints:
        sa, sb = (torch.load(o / rel, weights_only=False) for o in (out_a, out_b))
        sa, sb = sa.get("state_dict", sa), sb.get("state_dict", sb)
        assert all(torch.equal(sa[n], sb[n]) for n in sa if isinstance(sa[n], torch.Tensor))
    no_visible_partials(out_b)


TRAIN_HEAD_WRITERS = ("save_head", "write_history", "write_predictions", "plot_training_curves", "write_json")


@pytest.mark.slow
def test_train_head_interrupted_at_any_output_write_claims_nothing_and_reruns(synthetic_roots, tmp_path, monkeypatch):
    """Issue 29: Ctrl-C at each of train-head's output writes, in a run with other parameters than the
    finished one: no state record is left, so rerunning either command recomputes, never "up to date"
    over a mix of the two runs' files."""
    from pipeline.registry import stage
    from pipeline.state import state_path
    from stages import train_head

    base, params = synthetic_roots
    cfgs = [load_config(params, dataset="synth", overrides=[*HEAD_ARGS[3::2], f"train_head.epochs={e}"],
                        data_root=str(base / "a" / "data"), results_root=str(tmp_path / "results")) for e in (2, 3)]
    # Each configuration is trained once for real; the reruns reuse its fold results (what is under
    # test is the writing, and 3 trainings per write point would take minutes).
    trained: dict = {}
    real_cv = train_head.cross_validate
    monkeypatch.setattr(train_head, "cross_validate", lambda th, *a, **k: trained.setdefault(
        th.epochs, real_cv(th, *a, **k)))
    n_writes = [0]

    def counting(name):
        real = getattr(train_head, name)

        def write(*a, **k):
            n_writes[0] += 1
            if n_writes[0] == stop_at[0]:
                raise KeyboardInterrupt  # what Ctrl-C raises at that point
            return real(*a, **k)
        return write

    stop_at = [0]
    for name in TRAIN_HEAD_WRITERS:
        monkeypatch.setattr(train_head, name, counting(name))
    stage("train-head").run(cfgs[1], dataset="synth", force=True)
    total = n_writes[0]
    assert total >= 2 * 2 + 4  # a checkpoint and a history per fold, predictions, curves, provenance, metrics
    out = tmp_path / "results" / "synth"
    stage("train-head").run(cfgs[0], dataset="synth")  # the old run, complete and current (as each rerun below leaves it)
    for i in range(1, total + 1):
        n_writes[0], stop_at[0] = 0, i
        with pytest.raises(KeyboardInterrupt):
            stage("train-head").run(cfgs[1], dataset="synth")
        stop_at[0] = 0
        assert not state_path(cfgs[1], "synth", "train-head").exists(), f"interrupted at write {i}: state left"
        again = stage("train-head").run(cfgs[0], dataset="synth")
        assert "skipped" not in again, f"interrupted at write {i}: the old command claimed to be up to date"
        assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
        assert json.loads((out / "provenance.json").read_text())["params"]["train_head"]["epochs"] == 2
    no_visible_partials(out)


def _enospc_on_call(n: int, real):
    calls = [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)
    return failing


@pytest.mark.slow
@pytest.mark.parametrize("where", ["shard data", "rename"])
def test_disk_full_mid_write_leaves_no_partial_file_and_rerun_completes(bad_batch, tmp_path, monkeypatch, where):
    """ENOSPC while the second shard's features are written (inside HDF5), or at the atomic rename."""
    from pipeline.registry import stage

    copy_dataset(bad_batch["dir"], tmp_path, without=EXTRACTED)
    cfg = load_config(bad_batch["params"], data_root=str(tmp_path))
    feats = tmp_path / "bad" / "features"
    with monkeypatch.context() as m:
        if where == "shard data":  # shard 1 holds 2 videos: the 3rd features write is shard 2's first
            m.setattr(h5py.Dataset, "__setitem__", _enospc_on_call(3, h5py.Dataset.__setitem__))
        else:  # the first rename is shard 1's; the second, shard 2's
            import pipeline.io

            m.setattr(pipeline.io.os, "replace", _enospc_on_call(2, os.replace))
        with pytest.raises(OSError) as err:
            stage("extract").run(cfg, dataset="bad")
        assert err.value.errno == errno.ENOSPC
    shards = list_shards(feats)
    assert [s.name for s in shards] == ["shard-00000.h5"]  # the complete one only
    with h5py.File(shards[0], "r") as f:
        assert f["features"].shape[0] == f["video_id"].shape[0] == 2
    assert not [p for p in os.listdir(feats) if p.endswith(".tmp")]  # the failed temporary is removed
    assert not (feats / "index.h5").exists()
    summary = stage("extract").run(cfg, dataset="bad")
    assert (summary["resumed"], summary["cached"]) == (2, 9)
    a, b = load_cache(bad_batch["dir"] / "features"), load_cache(feats)
    assert a.video_id == b.video_id and a.features.tobytes() == b.features.tobytes()


def _under_file_limit(kb: int, *args: str) -> subprocess.CompletedProcess:
    """`pipeline ...` under `ulimit -f` (a disk that takes no file larger than `kb` KiB)."""
    import shlex

    cmd = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "pipeline.cli", *args))
    return subprocess.run(["bash", "-c", f"ulimit -f {kb}; exec {cmd}"], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_extract_past_the_file_size_limit_is_a_message_and_exit_1_and_the_rerun_completes(bad_batch, tmp_path):
    """Issue 29: HDF5 failing a write (EFBIG under `ulimit -f`, as on a full disk) used to end in a
    segmentation fault at interpreter exit (139)."""
    copy_dataset(bad_batch["dir"], tmp_path, without=EXTRACTED)
    args = ("run", "extract", "--no-deps", "--params", str(bad_batch["params"]), "--data-root", str(tmp_path))
    res = _under_file_limit(64, *args)  # a shard of two videos is ~170 KiB
    assert res.returncode == 1, res.stderr[-3000:]
    assert "no space left" in res.stderr and "rerun the same command" in res.stderr and "Traceback" not in res.stderr
    feats = tmp_path / "bad" / "features"
    no_visible_partials(feats)
    assert not list_shards(feats)
    finish(cli("extract", bad_batch["params"], tmp_path))
    a, b = load_cache(bad_batch["dir"] / "features"), load_cache(feats)
    assert a.video_id == b.video_id and a.features.tobytes() == b.features.tobytes()


@pytest.mark.slow  # a finetune run in a subprocess (4 s)
def test_finetune_checkpoint_past_the_file_size_limit_is_a_message_and_exit_1(tmp_path):
    """torch.save's "unexpected pos" RuntimeError on a refused write is reported as the disk problem."""
    from tests.test_finetune import _cfg, write_crops_dataset

    write_crops_dataset(tmp_path, n_subjects=2, per_subject=2)
    _cfg(tmp_path, epochs=1, head_epochs=1)
    res = _under_file_limit(256, "run", "finetune", "--no-deps", "--params", str(tmp_path / "params.yaml"))
    assert res.returncode == 1, res.stderr[-3000:]
    assert "no space left" in res.stderr and "Traceback" not in res.stderr
    no_visible_partials(tmp_path / "data")
