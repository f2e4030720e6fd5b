"""`pipeline init [DIR]`: a project folder for a pip-installed user, outside any clone of this repository.

Writes a commented `params.yaml` (the built-in defaults: `BUILTIN_TOP` and each stage dataclass's
defaults, its field docstrings as comments) and a `dvc.yaml` whose stages depend only on data files
and on `pipeline-version.txt` (the installed package's version, rewritten by an always-run stage), never
on source paths that exist only in a clone; `--dvc` also runs `dvc init`.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any, Iterable

import click
import yaml

from pipeline.registry import Stage, dvc_stage, pipeline_stages

VERSION_FILE = "pipeline-version.txt"


INIT_STAGES = tuple(pipeline_stages())
"""The repository's pipeline (pipeline/registry.py), with the package version standing for its code."""


def dvc_yaml(stages: Iterable[Stage]) -> dict:
    """dvc.yaml as a mapping: the registry's stages (one `foreach: ${repro}` pipeline each), their source
    paths replaced by the version file, which an always-run stage rewrites (`render_dvc_yaml` in a clone)."""
    out: dict[str, Any] = {"version": {
        "cmd": f"pipeline --version > {VERSION_FILE}", "always_changed": True,
        "outs": [{VERSION_FILE: {"cache": False}}]}}
    for st in stages:
        out[st.name] = dvc_stage(st, code=[VERSION_FILE])
    return {"stages": out}


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


def params_text(top: dict[str, Any]) -> str:
    """A commented params.yaml holding `top` and every stage section at its dataclass defaults."""
    from pipeline.config import SECTIONS, Config, DatasetConfig

    top_docs = field_docs(Config)
    lines = ["# Parameters of every stage (`pipeline init` wrote the built-in defaults; edit freely).",
             "# Override any key for one run: pipeline run detect --set detect.stride=2", ""]
    for key in ("dataset", "data_root", "results_root", "repro"):
        doc = top_docs.get(key) or {"data_root": "caches go to <data_root>/<dataset>/ (relative to this file)",
                                    "results_root": "results go to <results_root>/<dataset>/"}.get(key, "")
        lines.append(f"{key}: {_flow(top[key])}" + (f"    # {doc}" if doc else ""))
    lines += ["", "datasets:", "  # <name>: {adapter, root, classes, fps, options, overrides}; `pipeline datasets` "
              "lists the adapters"]
    ds_docs = field_docs(DatasetConfig)
    for name, entry in top["datasets"].items():
        lines.append(f"  {name}:")
        for k, v in entry.items():
            lines.append(f"    {k}: {_flow(v)}" + (f"    # {ds_docs[k]}" if k in ds_docs else ""))
    for section, cls in SECTIONS.items():
        docs = field_docs(cls)
        lines += ["", f"{section}:"]
        for f in dataclasses.fields(cls):
            if f.name in docs:
                lines += textwrap.wrap(docs[f.name], 100, initial_indent="  # ", subsequent_indent="  # ")
            lines.append(f"  {f.name}: {_flow(f.default)}")
    return "\n".join(lines) + "\n"


def _dvc_init(folder: Path) -> list[str]:
    """`dvc init`, with `--no-scm` outside git and `--subdir` inside a repository rooted above `folder`."""
    dvc = shutil.which("dvc")
    if dvc is None:
        raise click.ClickException("dvc is not installed: pip install 'ceflnet-pipeline[dvc]'")
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True) \
        if shutil.which("git") else None
    if top is None or top.returncode != 0:
        args = ["--no-scm"]
    else:
        args = [] if Path(top.stdout.strip()).resolve() == folder.resolve() else ["--subdir"]
    subprocess.run([dvc, "init", "-q", *args], cwd=folder, check=True)
    return args


@click.command("init")
@click.argument("folder", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dataset", "dataset", default=None, help="Add this dataset (with --adapter/--root) and make it "
              "the default and the one `dvc repro` runs (default: the demo).")
@click.option("--adapter", default="folder", show_default=True, help="Adapter of --dataset.")
@click.option("--root", default=None, type=click.Path(path_type=Path), help="Root of --dataset (written absolute).")
@click.option("--dvc", "with_dvc", is_flag=True, help="Also run `dvc init` (`--no-scm` outside a git repository).")
@click.option("--force", is_flag=True, help="Overwrite an existing params.yaml / dvc.yaml.")
def command(folder: Path, dataset: str | None, adapter: str, root: Path | None, with_dvc: bool, force: bool) -> None:
    """Write a commented params.yaml (the built-in defaults) and a dvc.yaml into FOLDER (default: here).

    The dvc.yaml tracks the installed package's version (`pipeline --version` into pipeline-version.txt),
    not source files, so it works wherever the package is pip-installed. Then `dvc repro` runs every
    dataset in params.yaml `repro:` (the demo unless --dataset is given).

    Reads nothing (the built-in defaults); writes FOLDER/params.yaml and FOLDER/dvc.yaml (and FOLDER/.dvc/ with
    --dvc)."""
    from pipeline.config import BUILTIN_TOP

    if dataset and root is None:
        raise click.UsageError("--dataset needs --root (the folder holding its videos)")
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / "params.yaml", folder / "dvc.yaml"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise click.ClickException(f"{', '.join(existing)} already exist(s); pass --force to overwrite")
    top = copy.deepcopy(BUILTIN_TOP)
    if dataset:
        top["datasets"][dataset] = {"adapter": adapter, "root": str(root.expanduser().resolve())}
        top["dataset"], top["repro"] = dataset, [dataset]
    targets[0].write_text(params_text(top))
    header = ("# One pipeline per dataset in params.yaml `repro:`. Stages depend on data files and on the installed\n"
              f"# package's version ({VERSION_FILE}), not on source files. Written by `pipeline init`.\n")
    targets[1].write_text(header + yaml.safe_dump(dvc_yaml(INIT_STAGES), sort_keys=False, width=110))
    click.echo(f"wrote {targets[0]} and {targets[1]}")
    if with_dvc and not (folder / ".dvc").exists():
        args = _dvc_init(folder)
        click.echo(f"ran dvc init {' '.join(args)}".strip())
    click.echo(f"next: cd {folder} && " + ("dvc repro" if with_dvc or (folder / ".dvc").exists() else
                                            "pipeline run extract  (or: dvc init --no-scm && dvc repro)"))

