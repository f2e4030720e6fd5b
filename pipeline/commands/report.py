"""`pipeline report ...`: reports that need no dataset."""
from __future__ import annotations

import json

import click


@click.group("report")
def command() -> None:
    """Reports that need no dataset (model complexity)."""


@command.command("complexity")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a markdown table.")
def complexity(as_json: bool) -> None:
    """Parameters and MACs of ResNet-18 + the CEFLNet head at 2, 5, 10 and 15 frames per clip
    (torch.utils.flop_counter), beside the paper's Tables 8-9. Reads no data and writes nothing."""
    from pipeline.complexity import complexity_markdown, complexity_report

    rows = complexity_report()
    click.echo(json.dumps(rows, indent=1) if as_json else complexity_markdown(rows))
