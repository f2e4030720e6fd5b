"""The one registry of stages: every other list of stages (CLI choices and help, upstream refresh,
state, the demo, `dvc.yaml`) derives from `STAGES` below; `tests/test_dvc.py` keeps `dvc.yaml`
equal to `render_dvc_yaml()`.

A `Stage` says what the stage is (name, module, upstream), what it reads (params sections or single
keys, data inputs, and — computed from its imports — the code files) and what it writes. The
runner (`pipeline/runner.py`) hands a stage a config that raises on any section or key not listed
here, so an undeclared read fails loudly instead of going unnoticed by DVC and by the signature.

The record is the whole contract between a stage and the rest: its module holds `work(cfg, dataset, *,
sig, force, **options) -> Outcome` and the functions its hooks name; everything else — the `pipeline run`
options, whether it brings upstream stages up to date, its signature's extra inputs, the check before a
skip, every path it writes — is read from here. Adding a stage: one module, one `Stage(...)` entry below,
its config section; then `python -m pipeline.registry > dvc.yaml` (docs/extending.md).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
"""The source tree (the repository, or site-packages for an installed package)."""
PACKAGES = ("pipeline", "stages", "cache")
"""Top-level packages of this project: imports of these are code dependencies of a stage."""
PLUMBING = ("pipeline.registry", "pipeline.runner", "pipeline.state", "pipeline.config", "pipeline.schema", "pipeline.errors")
"""Modules that decide *whether* a stage runs, not what it computes (parameter values, which are hashed
themselves, come through config): neither the signature nor dvc.yaml's deps list them, else a
help-text edit would recompute detect on a whole dataset."""


# --------------------------------------------------------------------------- where outputs live
# The one definition of every path the stages write (`{data}`: <data_root>/<dataset>, `{results}`:
# <results_root>/<dataset>). The `Output`s below and `pipeline/layout.py` (what the code opens) read these.
MANIFEST = "{data}/manifest.csv"
FAILURES = "{data}/failures.csv"
"""The shared failure ledger: each stage owns its own rows (the runner writes them)."""
FACES = "{data}/faces.h5"
DETECT_PARTS = "{data}/.detect-parts"
"""detect's per-video results, each written atomically: its resume state, not an output."""
QC = "{data}/qc"
CONTACT_SHEET = QC + "/detect_contact_sheet.png"
EXTRACT_SHEET = QC + "/extract_contact_sheet.png"
FRAMES = "{data}/frames.h5"
FEATURES = "{data}/features"
FINETUNED = FEATURES + "/finetuned"
"""finetune's per-fold caches (`fold-<k>/`), beside the frozen shards, never among them."""
BACKBONES = "{data}/checkpoints"
"""finetune's adapted backbones (`backbone-fold-<k>.pt`)."""
CROPS_PACK = "{data}/crops"
"""finetune's pack of the kept crops: a cache of its input rebuilt when missing, not an output."""
STATE_DIR = ".state"
"""Beside a stage's outputs (`{data}/.state/` or `{results}/.state/`): the runner's record per stage."""
OVERRIDES = "{data}/" + STATE_DIR + "/overrides.json"
"""What the dataset's family and its own `overrides:` set in the sections (`Config.overrides_of`), rewritten by
the runner when it changes: DVC's per-dataset view of `families:`. dvc.yaml's foreach cannot name an item's family
in `params:` (DVC has no nested `${...}`), and tracking the whole `families:` block reran every dataset's
train-head when one family changed; each stage depends on this file instead, so an edit reaches that family's
datasets only. In no `Stage.outs` (no signature or currency check reads it: the sections' values already hold the
overrides); dvc.yaml lists it among manifest's outputs, the stage DVC runs every time."""
METRICS = "{results}/metrics.json"
PROVENANCE = "{results}/provenance.json"
HISTORY = "{results}/history"
TRAINING_CURVES = "{results}/training_curves.png"
PREDICTIONS = "{results}/predictions.csv"
HEADS = "{results}/checkpoints"
"""train-head's fold heads (`fold-<k>.pt`)."""
REPORT = "{results}/report.md"
CONFUSION = "{results}/confusion.png"
ACTIVATION_MAPS = "{results}/activation_maps.png"
TSNE = "{results}/tsne.png"
ABLATION_JSON = "{results}/ablation.json"
ABLATION_MD = "{results}/ablation.md"


@dataclass(frozen=True)
class Output:
    """One file or folder a stage writes. `path` starts with `{data}` (`<data_root>/<dataset>`) or
    `{results}` (`<results_root>/<dataset>`)."""

    path: str
    kind: str = "outs"
    """`outs`, `metrics` or `plots` (the dvc.yaml list it goes in)."""
    cache: bool = False
    """In DVC's cache (restored by `dvc checkout`, per experiment) rather than in git or left in place."""
    plot: dict = field(default_factory=dict)
    """DVC plot properties (x, y, template, title)."""


@dataclass(frozen=True)
class Option:
    """A `pipeline run` option of the stages that list it (cli.py adds each one once, with their names)."""

    name: str
    """The keyword the stage's `work` receives; the flag is `--name` with `-` for `_`."""
    help: str
    form: str = "int"
    """`int`, `flag` (a switch) or `slice` (`K/N`, given to `work` as the pair `(K, N)`)."""
    param: str | None = None
    """Sets this params key instead of passing a keyword (`--folds` is `--set train_head.folds=...`), so the
    signature sees it."""
    upstream: bool = False
    """Also given to the upstream stages `pipeline run` brings up to date that list it (`--workers`)."""


WORKERS = Option("workers", "parallel processes (default: params).", upstream=True)
SHARD = Option("shard", "process slice K of N, K counted from 0 (0/4, 1/4, 2/4, 3/4: parallel jobs; then one "
               "plain run assembles faces.h5 / index.h5).", form="slice")
FOLDS = Option("folds", "number of subject-independent folds.", param="train_head.folds")
KEEP_CROPS = Option("keep_crops", "also store the aligned crops (JPEG) for fine-tuning.", form="flag",
                    param="extract.keep_crops", upstream=True)


@dataclass(frozen=True)
class Stage:
    name: str
    """CLI and DVC name (the STAGE of `pipeline run`, and `dvc repro <name>@<dataset>`)."""
    module: str
    upstream: str | None
    params: tuple[str, ...]
    """params.yaml sections (`detect`) or single keys (`extract.crop_size`) the stage reads, besides
    its dataset's entry `datasets.<D>`."""
    inputs: tuple[str, ...]
    """Data it reads (paths as in `Output.path`)."""
    outs: tuple[Output, ...]
    summary: str
    """One paragraph of the `pipeline run` help text."""
    volatile: tuple[str, ...] = ()
    """Keys that change speed, not results: left out of the signature."""
    failure_limit: str | None = None
    """The params key holding the largest tolerated share of failed videos."""
    extra_code: tuple[str, ...] = ()
    """Non-Python files the code reads (relative to ROOT), hashed like code."""
    in_pipeline: bool = True
    """Part of dvc.yaml's per-dataset pipeline (False: run on demand only)."""
    always_changed: bool = False
    """DVC runs it every time; the stage's own input fingerprint decides whether work is needed."""
    options: tuple[Option, ...] = ()
    """`pipeline run` options beyond the common ones (--force, --no-deps, the config options)."""
    partial: tuple[str, ...] = ()
    """Keywords of `work` that make a run partial (one `--shard` slice, a subset of heads): never skipped as
    current, a shared lock, nothing recorded."""
    runs_upstream: bool = True
    """`pipeline run` brings the upstream stages up to date first (False: it reads results as they are)."""
    # Hooks: names of functions in `module`, called by the runner and the CLI (`Stage.hook`).
    fingerprint: str | None = None
    """`(cfg, dataset) -> str`: inputs outside the pipeline (the dataset's files), hashed into the signature."""
    cheap_fingerprint: bool = False
    """`fingerprint` reads a few attributes, not a listing of the dataset: the CLI's `--no-deps` staleness
    warning may compute it."""
    verify: str | None = None
    """`(cfg, dataset, sig) -> bool`: a check of the outputs' contents before a skip (extract's checksums)."""
    check_inputs: str | None = None
    """`(cfg, dataset) -> None`: raises a PipelineError naming the fix before anything runs."""

    @property
    def state_root(self) -> str:
        """`{data}` or `{results}`: where its `.state/<name>.json` lives, beside its outputs."""
        return "{results}" if self.outs and self.outs[0].path.startswith("{results}") else "{data}"

    @property
    def state(self) -> str:
        return f"{self.state_root}/{STATE_DIR}/{self.name}.json"

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def hook(self, field_name: str) -> Callable[..., Any] | None:
        """The module's function a hook field names (`fingerprint`, `verify`, `check_inputs`), or None."""
        fn = getattr(self, field_name)
        return None if fn is None else getattr(self.load(), fn)

    def run(self, cfg: Any, dataset: str | None = None, *, force: bool = False, **options: Any) -> dict:
        """Run it for a dataset unless current (`pipeline.runner.run_stage`); returns its summary."""
        from pipeline.runner import run_stage

        return run_stage(self.name, cfg, dataset, force=force, **options)


SPEED = ("workers", "threads", "device", "batch_size", "max_failure_fraction")

STAGES: tuple[Stage, ...] = (
    Stage("manifest", "stages.manifest", None, ("manifest",), (),
          (Output(MANIFEST),),
          "List the dataset's videos through its adapter and probe each (frames decoded, fps, size, rotation). "
          "Reads the dataset root; writes <data_root>/D/manifest.csv and failures.csv rows.",
          volatile=("workers",), extra_code=("pipeline/assets/faces",), always_changed=True,
          fingerprint="input_fingerprint"),
    Stage("detect", "stages.detect", "manifest", ("detect", "extract.crop_size", "extract.margin", "extract.backbone"),
          (MANIFEST,),
          (Output(FACES), Output(CONTACT_SHEET)),
          "Decode every frame, detect faces in batches (RetinaFace-MobileNet0.25 or SCRFD), keep one subject's "
          "track with 5 landmarks, fill and smooth gaps. Reads manifest.csv; writes faces.h5, failures.csv rows "
          "and qc/detect_contact_sheet.png. Resumable (per-video parts; --force recomputes them).",
          # extract.crop_size/margin/backbone (its default margin) only shape the contact sheet's crops:
          # no reason to detect again.
          volatile=(*SPEED, "qc_samples", "crop_size", "margin", "backbone"),
          failure_limit="detect.max_failure_fraction", options=(WORKERS, SHARD), partial=("shard",)),
    Stage("resample", "stages.resample", "detect", ("resample",), (MANIFEST, FACES),
          (Output(FRAMES),),
          "Choose resample.n_frames (105) frames per video inside its face-present span. Reads faces.h5; writes "
          "frames.h5 (frame_index per video).",
          failure_limit="resample.max_failure_fraction", volatile=("max_failure_fraction",)),
    Stage("extract", "stages.extract", "resample", ("extract", "resample", "detect"),
          (MANIFEST, FACES, FRAMES),
          (Output(FEATURES), Output(EXTRACT_SHEET)),
          "Align the chosen frames (224x224, 5-point similarity) and cache per-frame backbone features. Reads "
          "faces.h5, frames.h5 and the videos; writes <data_root>/D/features/shard-*.h5 and index.h5, and "
          "qc/extract_contact_sheet.png (the face mesh's points too, with a *_mesh motion). Resumable, "
          "shardable (--shard k/N).",
          # shard_size only regroups videos into files: existing shards stay valid (issue 16). keep_crops
          # only adds crops: a cache with them serves keep_crops false, one without is redone (issue 29).
          # detect.qc_samples only sizes the QC sheet.
          volatile=(*SPEED, "shard_size", "keep_crops", "qc_samples"), failure_limit="extract.max_failure_fraction",
          options=(WORKERS, SHARD, KEEP_CROPS), partial=("shard",), verify="verify_outputs",
          extra_code=("pipeline/assets/facemesh",)),  # the mesh network's weights (extract.motion *_mesh)
    Stage("train-head", "stages.train_head", "extract", ("train_head",),
          (FEATURES, MANIFEST, FAILURES),
          (Output(METRICS, "metrics"),
           Output(PROVENANCE),
           # DVC takes one y column per stage-level plot: test WAR, overlaid across folds and
           # experiments; every column is in the CSVs (`dvc plots show <dir> -y train_loss`), the
           # train-vs-test picture in training_curves.png.
           Output(HISTORY, "plots", plot={
               "x": "epoch", "y": "test_war",
               "title": "test WAR per epoch: one chart per fold (fold-0 first), one line per revision"}),
           Output(TRAINING_CURVES, "plots", cache=True),
           Output(PREDICTIONS, "plots", cache=True,
                  plot={"template": "confusion", "x": "predicted", "y": "true", "title": "confusion (last epoch)"}),
           Output(HEADS, cache=True)),
          "Train the CEFLNet head (CFE + EIAN) on the cached features with subject-independent (or official) "
          "folds. Reads features/ and manifest.csv; writes <results_root>/D/metrics.json, provenance.json "
          "(effective parameters), history/fold-<k>.csv, training_curves.png, predictions.csv and per-fold "
          "checkpoints.",
          volatile=("device", "threads", "fold_workers", "fold_batch"), options=(FOLDS,),
          # with `features: finetuned`, the per-fold caches' attributes (pipeline/head/finetuned.py)
          fingerprint="input_fingerprint", cheap_fingerprint=True),
    Stage("evaluate", "stages.evaluate", "train-head", ("evaluate", "train_head"),
          (FEATURES, MANIFEST, FAILURES, PREDICTIONS, HEADS),
          (Output(REPORT, cache=True),
           Output(CONFUSION, "plots", cache=True),
           Output(ACTIVATION_MAPS, "plots", cache=True),
           Output(TSNE, "plots", cache=True)),
          "Rebuild the report (tables, confusion, activation maps, t-SNE) from predictions and checkpoints "
          "without retraining. Reads <results_root>/D/; writes report.md and figures there.",
          volatile=("device", "threads", "fold_workers", "fold_batch"),
          # It reads what train-head produced and checks it before anything runs (issue 16: it ran hours of
          # upstream stages before finding predictions.csv missing).
          runs_upstream=False, check_inputs="check_inputs"),
    Stage("ablate", "stages.ablate", "extract", ("train_head",),
          (FEATURES, MANIFEST, FAILURES),
          (Output(ABLATION_JSON), Output(ABLATION_MD)),
          "Train the paper's ablation (mean-pool baseline, LSTM, +SAL, +SAL+LRL, full) on the same folds. "
          "Reads features/; writes <results_root>/D/ablation.md and ablation.json.",
          volatile=("device", "threads", "fold_workers", "fold_batch"), in_pipeline=False, options=(FOLDS,),
          partial=("kinds",), fingerprint="input_fingerprint", cheap_fingerprint=True),
    # On demand (in_pipeline=False): the default chain, the demo included, trains on frozen features;
    # `train_head.features: finetuned` reads this stage's per-fold caches (docs/finetune.md).
    Stage("finetune", "stages.finetune", "extract", ("finetune", "extract", "train_head.folds", "train_head.seed"),
          (FEATURES, MANIFEST, FAILURES),
          (Output(FINETUNED), Output(BACKBONES)),
          "Adapt the extract backbone on each train-head fold's training videos (frame mode: backbone + linear "
          "classifier on augmented crops), then re-extract every video with it. Reads the crops kept by "
          "`extract --keep-crops` and manifest.csv; writes <data_root>/D/checkpoints/backbone-fold-<k>.pt and "
          "<data_root>/D/features/finetuned/fold-<k>/. Resumable per epoch; finished folds are verified and skipped.",
          volatile=("device", "threads", "crops_memory_gb", "workers", "max_failure_fraction", "shard_size", "keep_crops"),
          in_pipeline=False, options=(FOLDS,), verify="verify_outputs"),
)
BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    return BY_NAME[name]


def pipeline_stages() -> list[Stage]:
    """The default chain, in order (dvc.yaml's stages)."""
    return [s for s in STAGES if s.in_pipeline]


def upstream_chain(name: str) -> list[str]:
    """Stages to bring up to date before `name`, in order (the stage itself last)."""
    chain, cur = [], name
    while cur is not None:
        chain.append(cur)
        cur = BY_NAME[cur].upstream
    return chain[::-1]


# --------------------------------------------------------------------------- code dependencies


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


MODULE_NAME = re.compile(r"(?:%s)(?:\.\w+)+" % "|".join(PACKAGES))
"""A string naming a project module (`"pipeline.backbones.timm_plugin"`): how a registry of plug-ins
loaded by name (`importlib.import_module`) lists them so that the code dependencies follow them."""


@functools.lru_cache(maxsize=None)
def _imports(path: Path) -> frozenset[str]:
    """Project modules imported anywhere in the file (function-level imports included), and modules a
    plug-in registry names in full as a string constant."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_NAME.fullmatch(node.value):
            found.add(node.value)
    return frozenset(m for m in found if m.split(".")[0] in PACKAGES)


@functools.lru_cache(maxsize=None)
def _code_deps(name: str) -> tuple[str, ...]:
    """Source paths (relative to ROOT) a stage's outputs depend on: the `.py` file of every project
    module its module imports, transitively, with the `__init__.py` of each package above it (Python
    runs it on import), plus the stage's `extra_code`. `PLUMBING` modules are not followed: they decide
    whether a stage runs, not what it computes. The runner's `code_hash` and dvc.yaml's deps are this
    one list."""
    st = BY_NAME[name]
    todo, seen, deps = [st.module], set(), set(st.extra_code)
    while todo:
        mod = todo.pop()
        if mod in seen or mod in PLUMBING:
            continue
        seen.add(mod)
        path = _module_file(mod)
        if path is None:
            continue
        deps.add(str(path.relative_to(ROOT)))
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages above it
        todo += sorted(_imports(path))
    return tuple(sorted(deps))


def code_deps(name: str) -> list[str]:
    """Source paths (relative to ROOT) the stage imports, transitively; see `_code_deps`."""
    return list(_code_deps(name))


def code_hash(name: str) -> str:
    """Hash of the stage's code dependencies, part of its signature: an edit recomputes, with or without DVC."""
    h = hashlib.sha256()
    for dep in _code_deps(name):
        p = ROOT / dep
        files = sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts) if p.is_dir() else [p]
        for f in files:
            # Bytes, as DVC hashes them: any edit recomputes, with or without DVC (a comment too).
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- dvc.yaml


def _dvc_path(path: str) -> str:
    return path.replace("{data}", "${data_root}/${item}").replace("{results}", "${results_root}/${item}")


def dvc_stage(st: Stage, code: list[str] | None = None) -> dict:
    """One dvc.yaml stage (a foreach over params.yaml `repro:`). `code` replaces the source paths (an
    installed package tracks its version instead: `pipeline init`)."""
    do: dict = {"cmd": f"pipeline run {st.name} --dataset ${{item}} --no-deps",
                "deps": [*(code_deps(st.name) if code is None else code), *map(_dvc_path, st.inputs)],
                "params": [*st.params, "datasets.${item}"]}
    if st.upstream is not None:  # the dataset's family, as the first stage recorded it (OVERRIDES)
        do["deps"].append(_dvc_path(OVERRIDES))
    if st.always_changed:
        do["always_changed"] = True
    for kind in ("outs", "metrics", "plots"):
        items = []
        for o in st.outs:
            if o.kind != kind:
                continue
            # persist, every output: the runner's signature is the one answer to "current?" (HEADER)
            props = {"cache": o.cache, "persist": True, **o.plot}
            items.append({_dvc_path(o.path): props})
        if items:
            do[kind] = items
    # the runner's record of what produced the outputs, beside them: in place for data, cached for results
    do["outs"] = [*do.get("outs", []), {_dvc_path(st.state): {"cache": st.state_root != "{data}", "persist": True}}]
    if st.upstream is None:  # manifest, which DVC runs every time, leaves the record the later stages depend on
        do["outs"].append({_dvc_path(OVERRIDES): {"cache": False, "persist": True}})
    return {"foreach": "${repro}", "do": do}


HEADER = """\
# Generated from pipeline/registry.py by `python -m pipeline.registry > dvc.yaml`; do not edit by hand
# (tests/test_dvc.py checks that it matches). One pipeline per dataset listed in params.yaml `repro:`.
# Every output persists: DVC never deletes one before a rerun, and the runner's record of what produced
# it (<stage>'s .state/<stage>.json) decides whether it is current. Data stages resume by themselves
# (per-video parts, verified shards) and stay out of DVC's cache. Results are small: metrics, provenance
# and per-epoch history are committed to git, the rest is cached per experiment (`dvc checkout`
# restores it). Each stage's deps list the code it imports.
"""


def render_dvc_yaml(code: list[str] | None = None, *, header: str = HEADER, before: dict | None = None) -> str:
    """dvc.yaml: the pipeline's stages, in order. The one generator: the repository's (`python -m
    pipeline.registry > dvc.yaml`) and `pipeline init`'s, which passes its version file as every stage's
    `code` and the stage that writes it in `before` (stages placed first)."""
    import yaml

    stages = {**(before or {}), **{s.name: dvc_stage(s, code) for s in pipeline_stages()}}
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=110)


if __name__ == "__main__":
    print(render_dvc_yaml(), end="")
