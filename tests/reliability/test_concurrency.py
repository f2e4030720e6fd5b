"""Two `--shard k/2` extract processes at the same time on one dataset folder → a complete cache."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cache.reader import load_cache
from pipeline.config import load_config
from pipeline.io import Failure, read_failures
from tests.conftest import EXTRACTED, copy_dataset
from tests.reliability.test_crash_safety import cli, finish


def verify_exit(params: Path, data_root: Path):
    from click.testing import CliRunner

    from pipeline.cli import main

    return CliRunner().invoke(main, ["cache", "verify", "--params", str(params), "--data-root", str(data_root)])


@pytest.mark.slow
def test_two_shard_processes_at_once_make_a_complete_cache(bad_batch, tmp_path):
    copy_dataset(bad_batch["dir"], tmp_path, without=EXTRACTED)
    params = bad_batch["params"]
    # One torch thread each: two processes on a 2-core machine (threads do not change the results).
    procs = [cli("extract", params, tmp_path, "--shard", f"{k}/2", "--set", "extract.threads=1") for k in range(2)]
    s0, s1 = (finish(p) for p in procs)
    assert s0["videos"] + s1["videos"] == 10 and s0["cached"] + s1["cached"] == 9  # one video fails at extract
    res = verify_exit(params, tmp_path)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "bad" / "features").glob("shard-*.h5"))
    assert names and all(n.startswith(("shard-000of002-", "shard-001of002-")) for n in names), names
    fails = [f for f in read_failures(tmp_path / "bad" / "failures.csv") if f.stage == "extract"]
    assert [(f.video_id, f.kind) for f in fails] == [("vanished/clip", "short")]
    # Each slice's features match the single-process run's (other batch composition: fp16-rounding close).
    a, b = load_cache(bad_batch["dir"] / "features"), load_cache(tmp_path / "bad" / "features")
    assert sorted(a.video_id) == sorted(b.video_id)
    order = [b.video_id.index(v) for v in a.video_id]
    np.testing.assert_allclose(a.features.astype(np.float32), b.features[order].astype(np.float32), atol=2e-2)
    # The documented last step: a plain run finds everything cached and only rebuilds index.h5.
    from pipeline.registry import stage

    summary = stage("extract").run(load_config(params, data_root=str(tmp_path)), dataset="bad")
    assert (summary["computed"], summary["cached"]) == (0, 9)
    assert verify_exit(params, tmp_path).exit_code == 0


@pytest.mark.slow
def test_a_shard_run_leaves_other_slices_temporaries_alone(bad_batch, tmp_path):
    """A slice starting while another is writing must not delete the other's in-progress file."""
    from pipeline.registry import stage

    copy_dataset(bad_batch["dir"], tmp_path, without=EXTRACTED)
    feats = tmp_path / "bad" / "features"
    feats.mkdir()
    other = feats / ".shard-001of010-00000.h5.k2j4x9.tmp"  # slice 1 writing its first shard
    other_index = feats / ".index.h5.a8d7q1.tmp"  # slice 1 rebuilding index.h5
    mine = feats / ".shard-000of010-00000.h5.zz81pq.tmp"  # slice 0's own leftover from a killed run
    for p in (other, other_index, mine):
        p.write_bytes(b"in progress")
    cfg = load_config(bad_batch["params"], data_root=str(tmp_path))
    assert stage("extract").run(cfg, dataset="bad", shard=(0, 10))["cached"] == 1  # one video: quick
    assert other.exists() and other_index.exists()
    assert not mine.exists()


_HAMMER = """
import sys
from pathlib import Path
from pipeline.io import Failure, update_failures
path, who = Path(sys.argv[1]), sys.argv[2]
for i in range(150):
    update_failures(path, "extract", [Failure(f"{who}/{i}", "extract", "short", "x")], replace_ids=[f"{who}/{i}"])
"""


def test_concurrent_failure_updates_lose_no_row(tmp_path):
    """Shard processes each add their own failures.csv rows; a read-modify-write race would drop some."""
    path = tmp_path / "failures.csv"
    from pipeline.io import update_failures

    update_failures(path, "manifest", [Failure("m", "manifest", "missing", "x")])
    procs = [subprocess.Popen([sys.executable, "-c", _HAMMER, str(path), who]) for who in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ids = [f.video_id for f in read_failures(path)]
    assert len(ids) == 301 and len(set(ids)) == 301


@pytest.mark.slow
def test_index_rebuild_waits_for_the_other_slice(bad_batch, tmp_path):
    """index.h5 is listed and renamed under a lock: a slice finishing while another rebuilds it waits,
    then lists every shard (unlocked, the earlier lister's index could be renamed last)."""
    import shutil
    import threading

    from cache.store import write_index
    from pipeline.io import file_lock

    feats = tmp_path / "features"
    shutil.copytree(bad_batch["dir"] / "features", feats)
    (feats / "index.h5").unlink()
    with file_lock(feats / "index.h5"):
        t = threading.Thread(target=write_index, args=(feats,))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not (feats / "index.h5").exists()
    t.join(30)
    assert not t.is_alive() and (feats / "index.h5").exists()


@pytest.mark.slow  # two train-head processes (12 s)
def test_a_second_run_on_the_same_results_refuses_at_once_naming_the_first(tmp_path):
    """Issue 29: two train-heads on one results folder (with other parameters: the second used to die
    with a FileNotFoundError). The second refuses at once (exit 2), naming the first's pid and command."""
    import time

    from tests.head.conftest import tiny_params, write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", n_videos=24, n_subjects=8, dim=16)
    params = tiny_params(tmp_path, threads=1)
    head = ("--dataset", "synth", "--set", "train_head.folds=2")
    first = cli("train-head", params, tmp_path / "data", *head, "--set", "train_head.epochs=5000")
    lock = tmp_path / "results" / ".synth.lock"
    try:
        deadline = time.time() + 300
        while not (lock.exists() and f"pid {first.pid}:" in lock.read_text()):
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.time() < deadline
            time.sleep(0.1)
        second = cli("train-head", params, tmp_path / "data", *head, "--set", "train_head.epochs=3")
        out, err = second.communicate(timeout=300)
        assert second.returncode == 2, err[-2000:]
        assert f"pid {first.pid}: " in err and "train-head" in err and "Traceback" not in err
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.kill()
        first.wait()
