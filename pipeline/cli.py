"""The `pipeline` command: run stages, inspect the cache, list datasets, demo and predict.

Exit codes (README "Exit codes"): 0 success, 1 other error, 2 invalid configuration or usage,
3 dataset layout not found, 4 model weights missing, 5 too many videos failed.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sys
from typing import Any, Callable

import click

from pipeline.errors import PipelineError
from pipeline import registry
from pipeline.registry import STAGES, Option, Stage, upstream_chain


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def _guard(fn: Callable[[], Any]) -> Any:
    """Turn a PipelineError into its message and documented exit code (no traceback)."""
    try:
        return fn()
    except PipelineError as err:
        click.secho(f"error: {err}", fg="red", err=True)
        sys.exit(err.exit_code)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # a user's setup, not a bug: exit 2 (issue 29)
            click.secho(f"error: cannot write {err.filename or ''} ({err.strerror}). The data and results folders "
                        "must be writable: pass --data-root / --results-root (or set data_root / results_root in "
                        "params.yaml) to a folder you can write, or fix its permissions.", fg="red", err=True)
            sys.exit(2)
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        limit = " or raise the file size limit (`ulimit -f`)" if err.errno == errno.EFBIG else ""
        click.secho(f"error: no space left while writing {err.filename or ''} ({err.strerror}). Nothing half-written "
                    f"was kept under a final name; free some space{limit} and rerun the same command to resume.",
                    fg="red", err=True)
        # Not sys.exit: HDF5 flushes a file whose write failed once more at interpreter exit and
        # crashes (exit 139, measured under `ulimit -f`); the temporaries are already removed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def config_options(fn: Callable) -> Callable:
    """Options shared by every command that reads params.yaml."""
    opts = [
        click.option("--params", "params_path", default=None, type=click.Path(),
                     help="Parameter file [default: params.yaml when present, else the built-in defaults]."),
        click.option("--dataset", "-d", default=None, help="Dataset name from params.yaml (default: its `dataset`)."),
        click.option("--adapter", default=None, help="Override the dataset's adapter (any folder: `folder`)."),
        click.option("--root", default=None, help="Override the dataset's root folder (or CSV for `csv`)."),
        click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override any parameter, e.g. --set detect.stride=2 (repeatable)."),
        click.option("--data-root", default=None, help="Where caches go (default: params.yaml data_root)."),
        click.option("--results-root", default=None, help="Where results go (default: params.yaml results_root)."),
        click.option("-v", "--verbose", is_flag=True, help="Debug logging."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def load(params_path: str | None, dataset: str | None, adapter: str | None, root: str | None, overrides: tuple[str, ...],
         data_root: str | None, results_root: str | None, extra: list[str] | None = None):
    from pipeline.config import load_config

    return load_config(params_path, dataset=dataset, overrides=[*overrides, *(extra or [])], adapter=adapter,
                       root=root, data_root=data_root, results_root=results_root)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        """Ctrl-C exits 130 (128 + SIGINT, as shells report it), not click's "Aborted!" with 1 (issue 16)."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.secho("interrupted: finished work is kept; rerun the same command to resume", fg="red", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="ceflnet-pipeline")
def main() -> None:
    """Video facial expression recognition (CEFLNet) as an offline preprocessing + feature-cache pipeline.

    Stages: manifest → detect → resample → extract → train-head → evaluate (pipeline/registry.py). Parameters come from
    params.yaml; outputs go to <data_root>/<dataset>/ and <results_root>/<dataset>/ (docs/cache.md).

    Documents named here and in messages (README, docs/*.md, bench/results/*.md) are installed with the package:
    `pipeline docs docs/head.md` prints one, `pipeline docs` lists them.
    """


def stage_options(fn: Callable) -> Callable:
    """The stages' own `pipeline run` options, each once, from their registry records (`Stage.options`)."""
    seen: dict[str, Option] = {}
    for st in STAGES:
        for opt in st.options:
            seen.setdefault(opt.name, opt)
    for opt in reversed(list(seen.values())):
        flag = "--" + opt.name.replace("_", "-")
        names = ", ".join(s.name for s in STAGES if opt in s.options)
        kwargs: dict[str, Any] = {"is_flag": True} if opt.form == "flag" else {
            "type": int if opt.form == "int" else str, "default": None,
            **({"metavar": "K/N"} if opt.form == "slice" else {})}
        fn = click.option(flag, opt.name, help=f"{names}: {opt.help}", **kwargs)(fn)
    return fn


@main.command("run")
@click.argument("stage", type=click.Choice([s.name for s in STAGES]))
@config_options
@click.option("--no-deps", is_flag=True, help="Run only this stage, even if upstream outputs are missing or stale.")
@click.option("--force", is_flag=True, help="Recompute this stage even if its outputs are up to date (detect: every "
              "video, its per-video parts included).")
@stage_options
def run_cmd(stage: str, params_path: str, dataset: str | None, adapter: str | None, root: str | None,
            overrides: tuple[str, ...], data_root: str | None, results_root: str | None, verbose: bool,
            no_deps: bool, force: bool, **given: Any) -> None:
    """Run one STAGE (help text built from the registry's summaries below)."""
    _setup_logging(verbose)
    target = registry.stage(stage)
    chain = [registry.stage(s) for s in upstream_chain(stage)] if target.runs_upstream and not no_deps else [target]
    # Checked before the configuration is loaded or any stage runs: a usage error changes nothing.
    applied = _applied_options(target, chain, {k: v for k, v in given.items() if v is not None and v is not False})
    extra = [f"{opt.param}={'true' if value is True else value}" for opt, value, _ in applied if opt.param]
    cfg = _guard(lambda: load(params_path, dataset, adapter, root, overrides, data_root, results_root, extra))
    name = cfg.dataset
    check = target.hook("check_inputs")
    if check is not None:  # a stage that reads results checks them before anything runs
        _guard(lambda: check(cfg, name))
    if no_deps:
        stale = _stale_upstream(cfg, name, stage)
        if stale:
            click.secho(f"warning: --no-deps: upstream {', '.join(stale)} no longer match(es) the parameters "
                        f"(outputs made with other values); `pipeline run {stage} --dataset {name}` without "
                        "--no-deps brings them up to date", fg="yellow", err=True)
    from pipeline.workers import orphan_safe_workers

    for st in chain:  # upstream stages skip themselves when current
        kwargs: dict[str, Any] = {opt.name: value for opt, value, to in applied if not opt.param and st in to}
        if st is target and force:
            kwargs["force"] = True
        if st is not target:
            click.echo(f"[{st.name}] checking upstream outputs for {name} (skipped when up to date)", err=True)
        with orphan_safe_workers():  # joblib workers (detect, manifest, head folds) exit if we are killed
            summary = _guard(lambda: st.run(cfg, dataset=name, **kwargs))
        click.echo(json.dumps(summary, indent=1, default=str))


run_cmd.help = ("Run one STAGE for a dataset, bringing missing or stale upstream stages up to date first.\n\n"
                + "\n\n".join(f"{s.name}: {s.summary}" + ("" if s.in_pipeline else " (on demand)") for s in STAGES))


def _applied_options(target: Stage, chain: list[Stage], given: dict[str, Any]) -> list[tuple[Option, Any, list[Stage]]]:
    """Each option given, its value (`--shard` parsed) and the stages of this run it goes to: the target if it
    lists it, and the upstream ones that list it for an `upstream` option; a usage error when none does."""
    out = []
    for key, value in given.items():
        opt = next(o for s in STAGES for o in s.options if o.name == key)
        to = [s for s in chain if opt in s.options and (s is target or opt.upstream)]
        flag = "--" + key.replace("_", "-")
        if not to:
            takers = [s.name for s in STAGES if opt in s.options]
            who = " and ".join(takers) if len(takers) < 3 else ", ".join(takers[:-1]) + " and " + takers[-1]
            raise click.BadParameter(f"only {who} take{'s' if len(takers) == 1 else ''} {flag}, not {target.name}",
                                     param_hint=flag)
        out.append((opt, _parse_shard(value) if opt.form == "slice" else value, to))
    return out


def _stale_upstream(cfg, dataset: str, stage: str) -> list[str]:
    """Upstream stages whose recorded signature differs from today's parameters and code (a stage with an
    input fingerprint, such as manifest, is not checked: its signature needs a listing of the dataset root;
    unless its record marks it cheap, as train-head's reads a few HDF5 attributes)."""
    from pipeline.runner import fingerprint
    from pipeline.state import recorded, signature

    ups = [registry.stage(s) for s in upstream_chain(stage)[:-1]]
    ups = [s for s in ups if s.fingerprint is None or s.cheap_fingerprint]
    return [s.name for s in ups if recorded(cfg, dataset, s.name) not in
            (None, signature(cfg, dataset, s.name, fingerprint(cfg, s, dataset)))]


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected K/N like 0/4, got {text!r}") from None
    if not 0 <= k < n:
        raise click.BadParameter(f"K must be in [0, N), got {text!r}")
    return k, n


@main.command("datasets")
def datasets_cmd() -> None:
    """List the dataset adapters: expected layout, class set and default protocol.

    Reads nothing (the adapters' own descriptions); writes nothing."""
    from pipeline.adapters import ADAPTERS

    seen = set()
    for name, cls in sorted(ADAPTERS.items()):
        if cls in seen:
            continue
        seen.add(cls)
        aliases = [a for a, c in ADAPTERS.items() if c is cls and a != cls.name]
        click.secho(f"{cls.name}" + (f" (also: {', '.join(aliases)})" if aliases else ""), bold=True)
        click.echo(f"  {cls.description}")
        click.echo(f"  classes:  {', '.join(cls.default_classes) if cls.default_classes else 'as found (label folders)'}")
        click.echo(f"  protocol: {cls.protocol}")
        click.echo(f"  family:   {cls.family or 'none (the sections as they stand)'}  (params.yaml families:)")
        click.echo("  layout:\n" + "\n".join("    " + line for line in cls.layout.splitlines()))
        click.echo()


@main.group("cache")
def cache_group() -> None:
    """Inspect and check a dataset's feature cache (<data_root>/D/features/)."""


@cache_group.command("verify")
@config_options
def cache_verify(params_path, dataset, adapter, root, overrides, data_root, results_root, verbose) -> None:
    """Check schema, shapes, finite values, one entry per manifest video (or a recorded failure), and
    consistent provenance across shards. Exit 0 only when everything holds.

    Reads <data_root>/D/features/, manifest.csv and failures.csv; writes nothing."""
    _setup_logging(verbose)
    from pipeline.commands.verify import verify

    cfg = _guard(lambda: load(params_path, dataset, adapter, root, overrides, data_root, results_root))
    problems, stats = _guard(lambda: verify(cfg, cfg.dataset))
    click.echo(json.dumps(stats, indent=1, default=str))
    if problems:
        click.secho(f"{len(problems)} problem(s):", fg="red", err=True)
        for p in problems:
            click.echo(f"  - {p}", err=True)
        sys.exit(1)
    click.secho("cache OK", fg="green")


@cache_group.command("info")
@config_options
def cache_info(params_path, dataset, adapter, root, overrides, data_root, results_root, verbose) -> None:
    """Print counts, size on disk and provenance of a dataset's cache.

    Reads <data_root>/D/features/ and failures.csv; writes nothing."""
    from pipeline.commands.verify import info

    cfg = _guard(lambda: load(params_path, dataset, adapter, root, overrides, data_root, results_root))
    click.echo(json.dumps(_guard(lambda: info(cfg, cfg.dataset)), indent=1, default=str))


def _register_commands() -> None:
    """Commands written in their own files (demo, predict, report, init), imported unconditionally: a renamed
    module is an error here, not a command that silently disappears (issue 13)."""
    import importlib

    for module in ("pipeline.commands.demo", "pipeline.commands.predict", "pipeline.commands.report",
                   "pipeline.commands.init", "pipeline.commands.docs"):
        main.add_command(importlib.import_module(module).command)


_register_commands()

if __name__ == "__main__":
    main()
