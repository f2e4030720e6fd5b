"""The stage contract (issue 27): a stage is one module (`work` and the functions its hooks name), one
registry record and its config section. The runner, `pipeline run` (its choices, options and help) and
dvc.yaml read everything else from the record; a stage added that way (docs/extending.md) runs."""
from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import registry
from pipeline.registry import STAGES
from tests.conftest import VIDEOS, cut_clip, write_params

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ("fingerprint", "verify", "check_inputs")


@pytest.mark.parametrize("st", STAGES, ids=lambda s: s.name)
def test_a_record_names_only_what_its_module_has(st):
    module = st.load()
    for hook in HOOKS:
        assert getattr(st, hook) is None or callable(st.hook(hook)), (st.name, hook)
    accepted = inspect.signature(module.work).parameters
    # Keyword options reach `work`; a `param` option is a params override instead.
    assert {o.name for o in st.options if not o.param} | set(st.partial) <= set(accepted), st.name
    # The record is the one description: no copy of the name, no run() wrapper, no module-level hook flags.
    assert not {"STAGE", "run", "RUNS_UPSTREAM", "CHEAP_FINGERPRINT"} & set(vars(module)), st.name


def test_an_option_means_one_thing_in_every_stage_that_lists_it():
    by_name: dict[str, registry.Option] = {}
    for st in STAGES:
        for opt in st.options:
            assert by_name.setdefault(opt.name, opt) == opt, opt.name
            assert opt.form in ("int", "flag", "slice"), opt


TOY_MODULE = '''"""toy: each listed video's frame count times toy.factor, one line per video (a test's stage)."""
from pipeline import registry
from pipeline.io import read_manifest
from pipeline.layout import layout_for, resolve
from pipeline.runner import Outcome


def work(cfg, dataset: str, *, sig: str, force: bool = False, repeat: int | None = None) -> Outcome:
    rows = read_manifest(layout_for(cfg, dataset).manifest)
    lines = [f"{r.video_id},{r.n_frames * cfg.toy.factor}" for r in rows] * (repeat or 1)
    resolve(registry.TOY, cfg, dataset).write_text("\\n".join(lines) + "\\n")
    return Outcome({"stage": "toy", "dataset": dataset, "videos": len(rows)})
'''
TOY_PATH = 'TOY = "{data}/toy.csv"\n'
TOY_ENTRY = '''    Stage("toy", "stages.toy", "manifest", ("toy",), (MANIFEST,), (Output(TOY),),
          "Write each video's frame count times toy.factor. Reads manifest.csv; writes toy.csv.",
          options=(Option("repeat", "write every line this many times."),)),
'''
TOY_SECTION = '''

@dataclass(frozen=True)
class ToyConfig:
    factor: int = 2

    def check(self, key: str) -> list[str]:
        return [] if self.factor > 0 else [f"{key}.factor: must be > 0"]
'''


def _insert(path: Path, anchor: str, text: str, *, before: bool = True) -> None:
    src = path.read_text()
    assert src.count(anchor) == 1, f"{path.name}: {anchor!r} (the test's anchor) is not there once"
    path.write_text(src.replace(anchor, text + anchor if before else anchor + text))


def _add_toy_stage(src: Path) -> None:
    """The steps of docs/extending.md "Adding a stage", on a copy of the source tree."""
    (src / "stages" / "toy.py").write_text(TOY_MODULE)  # 1. one module
    reg = src / "pipeline" / "registry.py"  # 2. one registry entry (and the path it writes)
    _insert(reg, "\n\n@dataclass(frozen=True)\nclass Output:", "\n" + TOY_PATH.rstrip("\n"))
    _insert(reg, ")\nBY_NAME = ", TOY_ENTRY)
    # 3. its config section: a dataclass, its SECTIONS entry and the Config field (params.yaml: below)
    schema = next(p for p in (src / "pipeline" / "schema.py", src / "pipeline" / "config.py")
                  if p.exists() and "SECTIONS: dict[str, type] = {" in p.read_text())
    _insert(schema, "\n\nSECTIONS: dict[str, type] = {", TOY_SECTION)
    _insert(schema, "SECTIONS: dict[str, type] = {\n", '    "toy": ToyConfig,\n', before=False)
    _insert(schema, "    finetune: FinetuneConfig = FinetuneConfig()\n", "    toy: ToyConfig = ToyConfig()\n",
            before=False)


@pytest.mark.slow
def test_a_toy_stage_added_as_the_docs_say_runs_and_is_in_dvc_yaml(tmp_path):
    src = tmp_path / "src"
    for pkg in registry.PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    _add_toy_stage(src)
    cut_clip(VIDEOS / "single_face.mp4", tmp_path / "videos" / "happy" / "a.mp4", 7)
    params = write_params(tmp_path, {"x": {"adapter": "folder", "root": str(tmp_path / "videos")}}, "x",
                          toy={"factor": 3})
    env = {**os.environ, "PYTHONPATH": str(src)}

    def pipeline(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        return out.stdout

    run = ("run", "toy", "--params", str(params), "--dataset", "x")
    first = pipeline(*run, "--repeat", "2")  # upstream manifest first, then the toy with its own option
    toy_csv = tmp_path / "data" / "x" / "toy.csv"
    assert toy_csv.read_text() == "happy/a,21\nhappy/a,21\n"
    state = json.loads((tmp_path / "data" / "x" / ".state" / "toy.json").read_text())
    assert state["summary"] == {"stage": "toy", "dataset": "x", "videos": 1} and state["signature"]
    assert state["params"]["toy"] == {"factor": 3}
    assert '"videos": 1' in first
    assert '"skipped": "up to date"' in pipeline(*run, "--no-deps")  # current: the record says so
    pipeline(*run, "--no-deps", "--set", "toy.factor=5")  # its section is in its signature
    assert toy_csv.read_text() == "happy/a,35\n"

    help_text = " ".join(pipeline("run", "--help").split())
    assert "toy: Write each video's frame count" in help_text and "--repeat INTEGER toy: write every line" in help_text

    dvc = subprocess.run([sys.executable, "-m", "pipeline.registry"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    do = yaml.safe_load(dvc)["stages"]["toy"]["do"]
    assert do["cmd"] == "pipeline run toy --dataset ${item} --no-deps"
    assert "stages/toy.py" in do["deps"] and "${data_root}/${item}/manifest.csv" in do["deps"]
    assert do["params"] == ["toy", "datasets.${item}"] and "${data_root}/${item}/.state/overrides.json" in do["deps"]
    assert {next(iter(o)) for o in do["outs"]} == {"${data_root}/${item}/toy.csv", "${data_root}/${item}/.state/toy.json"}
