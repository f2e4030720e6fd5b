"""`pipeline docs [PATH]`: the documents that help texts, params.yaml comments and messages name
(`docs/head.md`, `bench/results/center.md`, README, `pipeline/tracking.py`), for a user of the wheel.

They ship inside the package (`pipeline/manual/`, links to the repository's own files, which the wheel
build copies; setup.cfg `package_data`), laid out as in the source repository, so a reference reads the
same in a clone and in an install.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

MANUAL = Path(__file__).resolve().parent.parent / "manual"
"""The shipped documents: README.md, docs/*, bench/results/*.md."""


def documents() -> list[Path]:
    """Every shipped document (in a clone the folders are links: followed)."""
    found = (Path(d) / f for d, _, files in os.walk(MANUAL, followlinks=True) for f in files)
    return sorted(p for p in found if p.suffix == ".md" or p.parent.name == "docs")  # as setup.cfg ships them


def resolve(ref: str) -> Path | None:
    """The installed file a reference names (`docs/head.md`, `README`, `pipeline/tracking.py`), or None."""
    from pipeline.registry import ROOT

    ref = ref.strip().strip("`").removeprefix("./")
    for base in (MANUAL, ROOT):  # documents, then the package's own source files
        for name in (ref, f"{ref}.md"):
            path = base / name
            if path.is_file():
                return path
    return None


@click.command("docs")
@click.argument("ref", required=False)
@click.option("--path", "path_only", is_flag=True, help="Print the file's location instead of its text.")
def command(ref: str | None, path_only: bool) -> None:
    """Print a document that a message names (e.g. `pipeline docs docs/head.md`); without REF, list them.

    Reads the documents installed with the package (pipeline/manual/); writes nothing."""
    if ref is None:
        for p in documents():
            click.echo(f"{p.relative_to(MANUAL).as_posix():40s} {p}")
        return
    path = resolve(ref)
    if path is None:
        raise click.BadParameter(f"{ref!r} is not an installed document; `pipeline docs` lists them", param_hint="REF")
    click.echo(path if path_only or path.suffix not in (".md", ".py", ".txt") else path.read_text(encoding="utf-8"))
