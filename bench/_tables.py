"""What the benches share: how one ends (its markdown printed and written, with its rows as JSON beside it when it
keeps them, so the table on screen is the table on disk and `bench_center.py --tables` can join parts later), and
which of `bench_center.py`'s params files lists a dataset."""
from __future__ import annotations

import json
from pathlib import Path


def publish(out: Path, text: str, rows: list[dict] | None = None) -> None:
    """Print `text`, write it to `out` (its folder made) and `rows` to `out` with `.json`; say where."""
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if rows is not None:
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(f"written {out}")


def params_for(files: list[Path], dataset: str) -> Path:
    """The first of `files` (bench_center.py's params files, one per sweep part) whose `datasets:` lists `dataset`."""
    import yaml

    for f in files:
        if dataset in (yaml.safe_load(f.read_text()).get("datasets") or {}):
            return f
    raise SystemExit(f"{dataset}: in none of {', '.join(map(str, files))}")


def add_cache_args(ap) -> None:
    """The arguments of a bench that trains on `bench_center.py`'s caches: its params files, datasets and folds."""
    ap.add_argument("--params", type=Path, action="append", required=True,
                    help="bench_center.py's params file(s); each dataset is read with the first that lists it")
    ap.add_argument("--datasets", required=True, help="comma list")
    ap.add_argument("--folds", type=int, default=4)
