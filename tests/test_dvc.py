"""The stage registry is the single source: dvc.yaml is rendered from it, every output has one
writer, every stage reads only what it declares; and DVC used as a researcher uses it on a clone."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import h5py
import pytest
import yaml

from pipeline import registry
from pipeline.config import SECTIONS, load_config
from pipeline.registry import STAGES, code_deps, pipeline_stages, render_dvc_yaml, stage, upstream_chain
from pipeline.runner import ScopedConfig, UndeclaredParameter
from tests.conftest import write_params

ROOT = Path(__file__).resolve().parent.parent


def test_dvc_yaml_is_rendered_from_the_registry():
    assert (ROOT / "dvc.yaml").read_text() == render_dvc_yaml(), "regenerate: python -m pipeline.registry > dvc.yaml"
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == [s.name for s in pipeline_stages()]
    for st in pipeline_stages():
        do = stages[st.name]["do"]
        assert do["cmd"] == f"pipeline run {st.name} --dataset ${{item}} --no-deps"
        assert set(code_deps(st.name)) <= set(do["deps"]) and st.module.replace(".", "/") + ".py" in do["deps"]
        assert set(do["params"]) == {*st.params, "datasets.${item}"}  # `families:` through OVERRIDES, per dataset
        overrides = "${data_root}/${item}/.state/overrides.json"
        assert (overrides in do["deps"]) == (st.upstream is not None), st.name
        assert (overrides in {next(iter(o)) for o in do["outs"]}) == (st.upstream is None), st.name


def test_a_family_edit_changes_only_its_own_datasets_record(tmp_path):
    """What dvc.yaml's stages depend on in place of the whole `families:` block: an edit of the wild family
    rewrites the record of a wild dataset and leaves the demo's, byte for byte (its stages stay current)."""
    from pipeline.state import record_overrides

    datasets = {"demo": {"adapter": "demo", "root": str(tmp_path / "raw")},
                "dfew": {"adapter": "dfew", "root": str(tmp_path / "dfew")}}
    params = write_params(tmp_path, datasets, "demo")

    def records(*sets: str) -> dict[str, str]:
        for name in datasets:
            record_overrides(load_config(params, dataset=name, overrides=sets), name)
        return {n: (tmp_path / "data" / n / ".state" / "overrides.json").read_text() for n in datasets}

    before = records()
    assert json.loads(before["dfew"]) == {"family": "wild", "overrides": dict(load_config(params, dataset="dfew")
                                                                              .overrides_of("dfew"))}
    assert json.loads(before["demo"]) == {"family": "", "overrides": {}}
    after = records("families.wild.train_head.fusion_weight=0.9")
    assert after["demo"] == before["demo"]
    assert json.loads(after["dfew"])["overrides"]["train_head.fusion_weight"] == 0.9


def test_a_section_key_the_family_overrides_leaves_its_datasets_signature(tmp_path):
    """Where DVC reruns train-head for a section edit (its params list the whole section), a dataset whose family
    overrides that key keeps its signature, so the runner keeps its results (every dvc.yaml output persists)."""
    from pipeline.state import signature

    datasets = {"demo": {"adapter": "demo", "root": str(tmp_path / "raw")},
                "dfew": {"adapter": "dfew", "root": str(tmp_path / "dfew")}}
    params = write_params(tmp_path, datasets, "demo")
    key = "train_head.fusion_weight"
    assert key in dict(load_config(params, dataset="dfew").overrides_of("dfew"))  # the wild family's

    edited = tmp_path / "edited.yaml"  # what `dvc exp run -S train_head.fusion_weight=0.3` does: the file, not a --set
    raw = yaml.safe_load(params.read_text())
    raw["train_head"] = {"fusion_weight": 0.3}
    edited.write_text(yaml.safe_dump(raw))

    def sig(path: Path, name: str) -> str:
        return signature(load_config(path, dataset=name), name, "train-head")

    assert sig(edited, "dfew") == sig(params, "dfew")
    assert sig(edited, "demo") != sig(params, "demo")  # in no family: the section's value is its own


def test_every_output_has_exactly_one_writer_and_inputs_come_from_upstream():
    writers: dict[str, list[str]] = {}
    for st in STAGES:
        for path in [o.path for o in st.outs] + [st.state]:
            writers.setdefault(path, []).append(st.name)
    assert {p: w for p, w in writers.items() if len(w) > 1} == {}
    for st in STAGES:
        chain = upstream_chain(st.name)[:-1]
        for path in st.inputs:
            if path == "{data}/failures.csv":  # the shared ledger: each stage owns its own rows
                continue
            assert writers[path][0] in chain, (st.name, path)


def test_params_yaml_is_written_the_way_dvc_writes_it(tmp_path):
    """`dvc exp run -S` rewrites params.yaml with its own YAML style: in that style already, one value
    changed is a one-line diff (the clone test checks the diff itself)."""
    from dvc.utils.serialize import modify_yaml

    copy = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", copy)
    with modify_yaml(copy):
        pass
    assert copy.read_text() == (ROOT / "params.yaml").read_text()


def test_declared_params_exist():
    for st in STAGES:
        for item in st.params:
            section, _, key = item.partition(".")
            assert section in SECTIONS, item
            assert not key or key in {f.name for f in fields(SECTIONS[section])}, item
        for key in st.volatile:
            assert any(key in {f.name for f in fields(SECTIONS[p.split(".")[0]])} for p in st.params), key


def test_code_deps_follow_imports_including_late_ones():
    # resample imports pipeline/tracking.py; extract reaches pipeline/video.py and the backbones (the
    # plug-ins through the names in PLUGINS); evaluate's late `from pipeline.head...` imports count;
    # manifest reaches every adapter through the names the adapter registry lists.
    assert "pipeline/tracking.py" in code_deps("resample")
    assert {"pipeline/video.py", "pipeline/backbones/__init__.py", "pipeline/backbones/resnet.py",
            "pipeline/backbones/timm_plugin.py", "pipeline/backbones/clip_plugin.py", "pipeline/align.py"} <= set(code_deps("extract"))
    assert "pipeline/head/train.py" in code_deps("evaluate")
    assert {"pipeline/adapters/dfew.py", "pipeline/adapters/demo.py", "pipeline/demo/generate.py"} <= set(code_deps("manifest"))
    for st in STAGES:  # plumbing decides whether a stage runs, not what it computes: in neither answer
        assert not {"pipeline/config.py", "pipeline/runner.py", "pipeline/registry.py"} & set(code_deps(st.name)), st.name


@pytest.fixture
def source_copy(tmp_path, monkeypatch):
    """The project's packages copied to a folder the code hash reads instead: edits there leave the checkout alone."""
    for pkg in registry.PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(registry, "ROOT", tmp_path)
    registry._code_deps.cache_clear()
    yield tmp_path
    registry._code_deps.cache_clear()


def _hashes() -> dict[str, str]:
    registry._code_deps.cache_clear()
    return {st.name: registry.code_hash(st.name) for st in STAGES}


def test_an_edit_of_the_demo_generator_leaves_detect_and_extract_current(source_copy):
    """Per file, as imported: the demo generator is manifest's code (it writes the demo's videos), not that
    of the stages after it; before, `video.py -> adapters -> adapters/demo -> pipeline/demo` made it all of theirs."""
    before = _hashes()
    gen = source_copy / "pipeline" / "demo" / "generate.py"
    gen.write_text(gen.read_text() + "\n\ndef _added() -> int:\n    return 1  # a comment\n")
    after = _hashes()
    assert after["manifest"] != before["manifest"]
    assert {k for k in before if after[k] != before[k]} == {"manifest"}


def test_a_rerun_manifest_with_the_same_listing_leaves_detect_current(source_copy, tmp_path):
    """The manifest runs every time, and its signature changes with the demo generator's code; what detect
    takes from it is manifest.csv's bytes, so a folder dataset's detect stays current (the runner's view,
    as DVC's). A changed listing still recomputes detect."""
    from pipeline.state import mark_done, signature

    cfg = load_config(write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x"))
    listing = cfg.dataset_dir("x") / "manifest.csv"
    listing.parent.mkdir(parents=True)
    listing.write_text("video_id,path\na,a.mp4\n")

    def rerun_manifest() -> str:  # what the runner records after the manifest's work
        registry._code_deps.cache_clear()
        mark_done(cfg, "x", "manifest", signature(cfg, "x", "manifest"), {})
        return signature(cfg, "x", "detect")

    before = rerun_manifest()
    gen = source_copy / "pipeline" / "demo" / "generate.py"
    gen.write_text(gen.read_text() + "\n# a comment\n")
    assert rerun_manifest() == before
    listing.write_text("video_id,path\na,a.mp4\nb,b.mp4\n")
    assert rerun_manifest() != before


def test_an_edit_of_a_module_extract_uses_changes_its_hash(source_copy):
    before = _hashes()
    align = source_copy / "pipeline" / "align.py"
    align.write_text(align.read_text() + "\n# a comment\n")  # bytes, as DVC sees them: a comment counts
    after = _hashes()
    assert {k for k in before if after[k] != before[k]} == {"detect", "extract", "finetune"}
    assert "pipeline/align.py" in code_deps("extract") and "pipeline/align.py" not in code_deps("resample")


def test_a_stage_sees_only_the_params_it_declares(tmp_path):
    cfg = load_config(write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path)}}, "x"))
    view = ScopedConfig(cfg, stage("detect"))
    assert view.detect.det_size == cfg.detect.det_size and view.extract.crop_size == cfg.extract.crop_size
    assert view.dataset_config("x").adapter == "folder"
    with pytest.raises(UndeclaredParameter, match="extract.weights"):
        view.extract.weights
    with pytest.raises(UndeclaredParameter, match="'train_head'"):
        view.train_head


# --------------------------------------------------------------------------- DVC on a clone


def _run(cwd: Path, *args: str, timeout: int = 900, stderr: bool = True) -> str:
    # The clone's own code, not the checkout running the tests: the code edit below must be the one run.
    env = {**os.environ, "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    out = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, " ".join(args) + "\n" + out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + (out.stderr if stderr else "")


def _ran(log: str) -> set[str]:
    return {line.split("'")[1].split("@")[0] for line in log.splitlines() if line.startswith("Running stage '")}


def _exp_name(log: str) -> str:
    return next(line.split()[-1] for line in log.splitlines() if line.startswith("Ran experiment(s): ")).strip(".")


def _frame_index(repo: Path) -> dict:
    with h5py.File(repo / "data" / "demo" / "frames.h5", "r") as f:
        out = {}
        f.visititems(lambda name, obj: out.__setitem__(name, obj[:].tolist()) if name.endswith("frame_index") else None)
    return out


def _tiny_demo_repo(tmp_path: Path) -> Path:
    """A git + DVC clone of this checkout's tracked files with a tiny demo: 24 short videos, 2 folds, 2 epochs."""
    if shutil.which("dvc") is None or shutil.which("pipeline") is None:
        pytest.fail("dvc and the pipeline command must be installed (pip install -e '.[dev]')")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    repo = tmp_path / "repo"
    for f in files:
        if f.startswith(("tests/data/", "bench/", "docs/", "results/")) or f == "dvc.lock":
            continue
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, repo / f, follow_symlinks=False)  # pipeline/manual: links
    # Tiny demo: 24 short videos, 2 folds, 2 epochs. Edited as text so params.yaml stays block style.
    text = (repo / "params.yaml").read_text()
    for old, new in (("      seed: 0\n", "      n_frames:\n      - 50\n      - 60\n      seed: 0\n"),
                     ("  folds: 10\n", "  folds: 2\n"),
                     ("      identities: 12 ", "      identities: 4 "),
                     ("  epochs: 120\n", "  epochs: 2\n"), ("  det_size: 640", "  det_size: 256"),
                     ("  fold_workers: 0 ", "  fold_workers: 1 "), ("  tsne: true", "  tsne: false")):
        assert old in text, old
        text = text.replace(old, new)
    (repo / "params.yaml").write_text(text)
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "clone")
    return repo


@pytest.mark.slow
def test_the_demo_and_dvc_repro_reuse_each_others_work(tmp_path):
    """`pipeline demo` then `dvc repro` recomputes nothing (the demo records its outputs in dvc.lock), and a
    second demo reuses every stage (issue 27)."""
    repo = _tiny_demo_repo(tmp_path)
    demo = _run(repo, "pipeline", "demo")
    assert "dvc: recorded in dvc.lock" in demo
    after = _run(repo, "dvc", "repro")
    assert _ran(after) == {"manifest"}  # always runs; its listing fingerprint finds nothing new
    assert '"skipped": "up to date"' in after
    assert "changed" not in _run(repo, "dvc", "status", *[f"{s.name}@demo" for s in pipeline_stages()[1:]])
    again = _run(repo, "pipeline", "demo")
    assert again.count("up to date in") == len(pipeline_stages()), again
    # With a --set the demo ran something else than dvc.yaml: it says so and leaves dvc.lock alone.
    lock = (repo / "dvc.lock").read_text()
    other = _run(repo, "pipeline", "demo", "--set", "train_head.lr=3e-4")
    assert "not recorded in dvc.lock" in other and (repo / "dvc.lock").read_text() == lock


@pytest.mark.slow
def test_dvc_as_a_researcher_uses_it(tmp_path):
    repo = _tiny_demo_repo(tmp_path)
    first = _run(repo, "dvc", "repro")
    assert _ran(first) == {s.name for s in pipeline_stages()}
    second = _run(repo, "dvc", "repro")
    assert _ran(second) == {"manifest"}  # always runs; its listing fingerprint finds nothing new
    assert '"skipped": "up to date"' in second
    reused = _run(repo, "pipeline", "demo")  # the other way round: the demo reuses what dvc repro made
    assert reused.count("up to date in") == len(pipeline_stages()), reused

    # A code edit in a library module the stage imports reruns that stage for real, and DVC agrees it is now current.
    before = _frame_index(repo)
    src = repo / "pipeline" / "resampling.py"
    old = "    return np.where(flags[idx] != ABSENT, idx, nearest).astype(np.int64)"
    assert old in src.read_text()
    src.write_text(src.read_text().replace(old, old + "[::-1]"))
    edited = _run(repo, "dvc", "repro")
    assert {"resample", "extract", "train-head", "evaluate"} <= _ran(edited)
    after = _frame_index(repo)
    assert after.keys() == before.keys() and all(after[k] == before[k][::-1] for k in before)
    assert "changed" not in _run(repo, "dvc", "status", "resample@demo", "extract@demo")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "baseline")
    baseline = json.loads((repo / "results/demo/metrics.json").read_text())
    predictions = (repo / "results/demo/predictions.csv").read_text()

    # Another family's edit is not the demo's: nothing of it reruns (dvc.yaml tracks `families:` per dataset).
    assert _ran(_run(repo, "dvc", "exp", "run", "-S", "families.wild.train_head.fusion_weight=0.9")) == {"manifest"}
    _run(repo, "git", "checkout", "--", ".")

    # DVC reruns train-head for a key its params list but no result depends on (`threads`): it deletes nothing
    # first, so the runner finds the outputs current and keeps them instead of retraining (one answer: the runner's).
    checkpoint = repo / "results/demo/checkpoints/fold-0.pt"
    stamp = checkpoint.stat().st_mtime_ns
    threads = _run(repo, "dvc", "exp", "run", "-S", "train_head.threads=1")
    assert "train-head" in _ran(threads)
    assert '"skipped": "up to date"' in threads.split("Running stage 'train-head@demo'")[1].split("Running stage")[0]
    assert checkpoint.stat().st_mtime_ns == stamp
    assert (repo / "results/demo/predictions.csv").read_text() == predictions
    _run(repo, "git", "checkout", "--", ".")

    lr = _run(repo, "dvc", "exp", "run", "-S", "train_head.lr=3e-4")
    assert _ran(lr) - {"manifest"} == {"train-head", "evaluate"}
    assert _run(repo, "git", "diff", "--numstat", "params.yaml").split()[:2] == ["1", "1"]  # one-line diff
    exp_lr = _exp_name(lr)
    # Back to the baseline without retraining: git for the small files, DVC's cache for the rest.
    _run(repo, "git", "checkout", "--", ".")
    assert "Running stage" not in _run(repo, "dvc", "checkout")
    assert json.loads((repo / "results/demo/metrics.json").read_text()) == baseline
    assert (repo / "results/demo/predictions.csv").read_text() == predictions
    assert "changed" not in _run(repo, "dvc", "status", "train-head@demo", "evaluate@demo")

    # The demo takes its epochs from the section, so the plain key a researcher types reaches it.
    ep = _run(repo, "dvc", "exp", "run", "-S", "train_head.epochs=7")
    exp_ep = _exp_name(ep)
    assert json.loads((repo / "results/demo/metrics.json").read_text())["epochs"] == 7
    for fold in (0, 1):
        with (repo / f"results/demo/history/fold-{fold}.csv").open() as f:
            assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, 8))  # 7 epochs trained
    prov = json.loads((repo / "results/demo/provenance.json").read_text())
    assert prov["params"]["train_head"]["epochs"] == 7 and prov["params"]["train_head"]["folds"] == 2

    shown = json.loads(_run(repo, "dvc", "exp", "show", "--json", stderr=False))
    wars = _metric_per_rev(shown, "war")
    assert {exp_lr, exp_ep} <= set(wars) and len(wars) >= 3, wars
    assert all(isinstance(v, float) for v in wars.values()), wars
    diff = json.loads(_run(repo, "dvc", "metrics", "diff", "HEAD", exp_ep, "--all", "--json", stderr=False))
    entry = diff["results/demo/metrics.json"]
    assert isinstance(entry["war"]["old"], float) and isinstance(entry["uar"]["new"], float)
    assert entry["epochs"] == {"old": 2, "new": 7, "diff": 5}
    _run(repo, "dvc", "plots", "diff", "HEAD", exp_lr, exp_ep, "-o", "plots")
    html = (repo / "plots" / "index.html").read_text()
    assert "test_war" in html and exp_lr in html and exp_ep in html and "predicted" in html


def _metric_per_rev(shown, key: str) -> dict:
    """{revision or experiment name: value of `key`} from `dvc exp show --json`."""
    found: dict = {}

    def walk(node, name=None):
        if isinstance(node, dict):
            name = node.get("name") or node.get("rev") or name
            data = node.get("data")
            if isinstance(data, dict):
                for m in (data.get("metrics") or {}).values():
                    value = (m.get("data") or {}).get(key)
                    if value is not None:
                        found[name] = value
            for v in node.values():
                walk(v, name)
        elif isinstance(node, list):
            for v in node:
                walk(v, name)

    walk(shown)
    return found
