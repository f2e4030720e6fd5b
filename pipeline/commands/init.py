"""`pipeline init [DIR]`: a project folder for a pip-installed user, outside any clone of this repository.

Writes a commented `params.yaml` (the built-in defaults: `BUILTIN_TOP` and each stage dataclass's
defaults, its field docstrings as comments; only `extract.backbone` is the shipped `retinaface_mnet`, so
the defaults run offline), a `dvc.yaml` whose stages depend only on data files and on
`pipeline-version.txt` (the installed package's version, rewritten by an always-run stage and written
here first, so `dvc repro --dry` finds it), never on source paths that exist only in a clone, and a
`.gitignore` that keeps data and heavy results out of git. When DVC is installed it also makes the folder
one that `dvc exp run` works in: a git repository (`git init`, or the enclosing one) and `dvc init`.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any, Iterable

import click
import yaml

from pipeline.layout import ResultsLayout
from pipeline.registry import render_dvc_yaml

VERSION_FILE = "pipeline-version.txt"


def dvc_yaml_text() -> str:
    """The repository's dvc.yaml (`render_dvc_yaml`, the registry's stages) with the package version standing
    for the code: every stage depends on the version file, which an always-run first stage rewrites."""
    header = ("# One pipeline per dataset in params.yaml `repro:`. Stages depend on data files and on the installed\n"
              f"# package's version ({VERSION_FILE}), not on source files. Written by `pipeline init`.\n")
    version = {"cmd": f"pipeline --version > {VERSION_FILE}", "always_changed": True,
               "outs": [{VERSION_FILE: {"cache": False}}]}
    return render_dvc_yaml([VERSION_FILE], header=header, before={"version": version})


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string right under a field), read from its source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except OSError:  # installed without sources (.pyc only): the file is still valid, only uncommented
        return {}
    body = tree.body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def _flow(value: Any) -> str:
    value = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


OFFLINE_BACKBONE = "retinaface_mnet"
"""The backbone whose weights ship with the package (the detector's own body): init's default."""


def params_text(top: dict[str, Any], sections: dict[str, dict[str, Any]] | None = None) -> str:
    """A commented params.yaml holding `top` and every stage section at its dataclass defaults, with
    `sections` (`{"extract": {"backbone": ...}}`) replacing single defaults."""
    from pipeline.backbones.resnet import imagenet_path
    from pipeline.config import SECTIONS, Config, DatasetConfig

    sections = sections or {}
    top_docs = field_docs(Config)
    lines = ["# Parameters of every stage (`pipeline init` wrote the built-in defaults; edit freely).",
             "# Override any key for one run: pipeline run detect --set detect.stride=2", ""]
    for key in ("dataset", "data_root", "results_root", "repro"):
        doc = top_docs.get(key) or {"data_root": "caches go to <data_root>/<dataset>/ (relative to this file)",
                                    "results_root": "results go to <results_root>/<dataset>/"}.get(key, "")
        value = top[key]
        if isinstance(value, (list, tuple)):  # block style: `dvc exp run -S` rewrites the file so
            lines.append(f"{key}:" + (f"    # {doc}" if doc else ""))
            lines += [f"- {_flow(v)}" for v in value]
        else:
            lines.append(f"{key}: {_flow(value)}" + (f"    # {doc}" if doc else ""))
    lines += ["", "datasets:",
              "  # <name>: {adapter, root, classes, fps, options, overrides}; `pipeline datasets` lists the adapters.",
              "  # To add one, write its entry here and change BOTH `dataset:` (what `pipeline run` processes)",
              "  # and `repro:` (what `dvc repro` runs) to its name. A folder of videos, one subfolder per label:",
              "  # mine:",
              "  #   adapter: folder",
              "  #   root: /path/to/videos        # /path/to/videos/<label>/<video>.mp4"]
    ds_docs = field_docs(DatasetConfig)
    for name, entry in top["datasets"].items():
        lines.append(f"  {name}:")
        for k, v in entry.items():
            lines.append(f"    {k}: {_flow(v)}" + (f"    # {ds_docs[k]}" if k in ds_docs else ""))
    lines += ["", "families:    # overrides shared by a kind of dataset (a dataset is in its adapter's unless its entry",
              "             # says `family: NAME` or `family: \"\"`), under the dataset's own `overrides:`"]
    lines += ["  " + line for line in yaml.safe_dump(top["families"], default_flow_style=False, sort_keys=False).splitlines()]
    for section, cls in SECTIONS.items():
        docs = field_docs(cls)
        lines += ["", f"{section}:"]
        for f in dataclasses.fields(cls):
            if f.name in docs:
                lines += textwrap.wrap(docs[f.name], 100, initial_indent="  # ", subsequent_indent="  # ")
            lines.append(f"  {f.name}: {_flow(sections.get(section, {}).get(f.name, f.default))}")
            if section == "extract" and f.name == "backbone" and f.default != OFFLINE_BACKBONE:
                lines += [f"  # {f.name}: {_flow(f.default)}    # the paper's backbone: needs torchvision's ImageNet "
                          f"weights file {imagenet_path().name}",
                          f"  #   in {imagenet_path().parent} (the torch hub cache; $TORCH_HOME moves it). "
                          "Nothing is downloaded."]
    return "\n".join(lines) + "\n"


def gitignore_lines(top: dict[str, Any], folder: Path, roots: Iterable[Path]) -> list[str]:
    """What `git add -A` must not stage: the data root (videos, manifest, faces.h5, feature shards,
    detect parts), dataset roots inside the project, video files, and results' heavy files (DVC adds its
    own lines for the outputs it caches when it first runs; these hold before that, and without DVC)."""
    lines = ["# Written by `pipeline init`: data, caches and heavy results stay out of git. Committed:",
             "# params.yaml, dvc.yaml, dvc.lock, results/<dataset>/{metrics.json,provenance.json,history/}."]
    for key in ("data_root", "results_root"):
        p = Path(top[key])
        if p.is_absolute():
            continue  # outside the project: nothing for git to stage
        base = "/" + p.as_posix().strip("/")
        res = ResultsLayout(Path(base) / "*")  # every dataset's results folder
        lines += [f"{base}/"] if key == "data_root" else [
            f"{res.heads.as_posix()}/", f"{base}/*/predict/", f"{base}/*/*.png", res.predictions.as_posix()]
    for root in roots:
        try:
            lines.append("/" + root.resolve().relative_to(folder.resolve()).as_posix() + "/")
        except ValueError:
            pass  # outside the project
    lines += ["*.mp4", "*.avi", "*.mov", "*.mkv", "*.webm", "*.h5", "__pycache__/",
              "# DVC's cache and temporary files (dvc init also writes .dvc/.gitignore)", "/.dvc/cache/", "/.dvc/tmp/"]
    return lines


def write_gitignore(path: Path, lines: list[str]) -> None:
    """Append the lines `path` lacks (a user's own .gitignore is kept)."""
    have = path.read_text().splitlines() if path.exists() else []
    missing = [ln for ln in lines if ln not in have]
    if missing:
        path.write_text("\n".join([*have, *missing]) + "\n")


def _git_top(folder: Path) -> Path | None:
    """The enclosing git repository's top folder, or None."""
    res = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True)
    return Path(res.stdout.strip()).resolve() if res.returncode == 0 else None


def _scm_init(folder: Path) -> list[str]:
    """A git repository (the enclosing one, else `git init`), then `dvc init` in it (`--subdir` when
    the repository's top is above `folder`): `dvc exp run` needs git. Returns what was run."""
    ran = []
    top = _git_top(folder)
    if top is None:
        subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
        ran.append("git init")
        top = folder.resolve()
    if not (folder / ".dvc").exists():
        args = [] if top == folder.resolve() else ["--subdir"]
        subprocess.run([shutil.which("dvc"), "init", "-q", *args], cwd=folder, check=True)
        ran.append(" ".join(["dvc init", *args]))
    return ran


PLOTS_TEMPLATE = "plots-offline.html"
"""`dvc plots show`'s page, in .dvc/ (DVC reads `plots.html_template` relative to it): Vega, Vega-Lite and
Vega-Embed inline, so charts draw with no network (DVC's own page loads them from a CDN)."""
PLOTS_PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
    <!-- Written by `pipeline init`: no scripts placeholder, so DVC adds no CDN script tags. -->
    <script type="text/javascript">
%s
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def write_plots_template(folder: Path) -> str:
    """The offline page for `dvc plots show` in FOLDER/.dvc/ and `dvc config plots.html_template` pointing at
    it; returns what was done. The scripts come from vl-convert-python (the `[dvc]` extra), bundled for
    Vega-Lite 5, the schema of DVC's templates."""
    try:
        import vl_convert
    except ImportError:
        return ("dvc plots show loads its chart scripts from a CDN (blank charts without network): "
                "pip install 'ceflnet-pipeline[dvc]' and rerun `pipeline init --force` for an offline page")
    bundle = vl_convert.javascript_bundle(vl_version="v5.21").replace("</script", "<\\/script")
    (folder / ".dvc" / PLOTS_TEMPLATE).write_text(PLOTS_PAGE % bundle, encoding="utf-8")
    subprocess.run([shutil.which("dvc"), "config", "plots.html_template", PLOTS_TEMPLATE], cwd=folder, check=True)
    return f"wrote .dvc/{PLOTS_TEMPLATE} (dvc plots show draws offline)"


def _usable_folder(folder: Path) -> None:
    """Exit 2 before anything is written when FOLDER cannot be a folder (a file on its path)."""
    for p in [folder, *folder.parents]:
        if p.exists():
            if not p.is_dir():
                raise click.UsageError(f"{folder}: {p} is a file, not a folder; choose a project folder whose "
                                       "path holds no file (e.g. a new name)")
            return


def next_steps(folder: Path, dataset: str | None, dvc_ready: bool) -> list[str]:
    """What to run next, right for what was asked (no `cd .`)."""
    cd = "" if folder.resolve() == Path.cwd().resolve() else f"cd {shlex.quote(str(folder))} && "
    if dataset:
        what = f"every stage on {dataset}"
        run = "dvc repro" if dvc_ready else f"pipeline run evaluate --dataset {dataset}"
        lines = [f"next: {cd}{run}    # {what}"]
        if dvc_ready:
            lines.append("then: git add -A && git commit -m baseline && dvc exp run -S train_head.lr=3e-4 && "
                         "dvc exp show")
        return lines
    from pipeline.commands.demo import DEMO_MINUTES, workload
    from pipeline.config import load_config

    what = workload(load_config(folder / "params.yaml", dataset="demo"))  # what init just wrote
    return [f"params.yaml runs the demo: `{'dvc repro' if dvc_ready else 'pipeline demo'}` generates {what} "
            f"from real faces (about {DEMO_MINUTES} minutes on 2 quiet CPU cores);",
            "  `pipeline demo --quick` is a 1-2 minute smoke run.",
            f"for your videos: pipeline init {shlex.quote(str(folder))} --force --dataset NAME --root "
            "/path/to/videos  (one subfolder per label),",
            "  or add an entry under `datasets:` in params.yaml and set both `dataset:` and `repro:` to its name."]


@click.command("init")
@click.argument("folder", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dataset", "dataset", default=None, help="Add this dataset (with --adapter/--root) and make it "
              "the default and the one `dvc repro` runs (default: the demo).")
@click.option("--adapter", default="folder", show_default=True, help="Adapter of --dataset.")
@click.option("--root", default=None, type=click.Path(path_type=Path), help="Root of --dataset (written absolute).")
@click.option("--dvc/--no-dvc", "with_dvc", default=None, help="Make FOLDER a DVC project: a git repository "
              "(`git init`, or the enclosing one) and `dvc init` [default: when dvc is installed].")
@click.option("--force", is_flag=True, help="Overwrite an existing params.yaml / dvc.yaml.")
def command(folder: Path, dataset: str | None, adapter: str, root: Path | None, with_dvc: bool | None,
            force: bool) -> None:
    """Write a commented params.yaml (the built-in defaults, with the offline backbone), a dvc.yaml and a
    .gitignore into FOLDER (default: here), and make it a git + DVC project that `dvc exp run` works in.

    The dvc.yaml tracks the installed package's version (`pipeline --version` into pipeline-version.txt),
    not source files, so it works wherever the package is pip-installed. Then `dvc repro` runs every
    dataset in params.yaml `repro:` (the demo unless --dataset is given).

    Reads nothing (the built-in defaults); writes FOLDER/params.yaml, dvc.yaml, pipeline-version.txt and
    .gitignore (lines appended to an existing one), and with DVC FOLDER/.dvc/ (and .git/ outside a repository)."""
    from pipeline.adapters import ADAPTERS
    from pipeline.config import BUILTIN_TOP, _name_problem

    # Every check before anything is written.
    if dataset is not None and (problem := _name_problem(dataset)):
        raise click.BadParameter(problem.removeprefix("dataset: "), param_hint="--dataset")
    if dataset and root is None:
        raise click.UsageError("--dataset needs --root (the folder holding its videos)")
    if adapter not in ADAPTERS:
        raise click.BadParameter(f"unknown adapter {adapter!r} (known: {', '.join(sorted(ADAPTERS))})",
                                 param_hint="--adapter")
    _usable_folder(folder)
    if with_dvc is None:
        with_dvc = shutil.which("dvc") is not None and shutil.which("git") is not None
    elif with_dvc and shutil.which("dvc") is None:
        raise click.ClickException("dvc is not installed: pip install 'ceflnet-pipeline[dvc]' (or pass --no-dvc)")
    elif with_dvc and shutil.which("git") is None:
        raise click.ClickException("git is not installed: DVC experiments need a git repository (install git, "
                                   "or pass --no-dvc)")
    targets = [folder / "params.yaml", folder / "dvc.yaml"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise click.ClickException(f"{', '.join(existing)} already exist(s); pass --force to overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    top = copy.deepcopy(BUILTIN_TOP)
    if dataset:
        top["datasets"][dataset] = {"adapter": adapter, "root": str(root.expanduser().resolve())}
        top["dataset"], top["repro"] = dataset, [dataset]
    targets[0].write_text(params_text(top, {"extract": {"backbone": OFFLINE_BACKBONE}}))
    targets[1].write_text(dvc_yaml_text())
    # The version stage rewrites it on every `dvc repro`; written now so that the stages depending on it
    # resolve before the first run (`dvc status`, `dvc repro --dry`; the latter then still stops at the first
    # data file an earlier stage makes, DVC's treeverse/dvc#9818: docs/experiments.md).
    (folder / VERSION_FILE).write_text(_version() + "\n")
    write_gitignore(folder / ".gitignore", gitignore_lines(top, folder, [root] if dataset else []))
    click.echo(f"wrote {targets[0]}, {targets[1]}, {folder / VERSION_FILE} and {folder / '.gitignore'}")
    if with_dvc:
        for ran in _scm_init(folder):
            click.echo(f"ran {ran}")
        click.echo(write_plots_template(folder))
    dvc_ready = (folder / ".dvc").is_dir()
    for line in next_steps(folder, dataset, dvc_ready):
        click.echo(line)


def _version() -> str:
    """What `pipeline --version` prints (the version stage's output, byte for byte)."""
    from importlib.metadata import version

    return f"pipeline, version {version('ceflnet-pipeline')}"
