"""Layers run one way: `cache/` (the store) imports nothing from `pipeline/` or `stages/`, and the library
(`pipeline/`) never imports `stages/` (a stage calls the library; `pipeline predict` calls the same
library functions the stages do). Read from the source with `ast`: function-level imports count."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"cache": ("pipeline", "stages"), "pipeline": ("stages",)}


def imported(path: Path) -> set[str]:
    """Absolute module names the file imports anywhere (`from x import y` gives `x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_runs_up_the_layers(layer):
    wrong = {f"{py.relative_to(ROOT)}: {mod}" for py in sorted((ROOT / layer).rglob("*.py"))
             for mod in imported(py) if mod.split(".")[0] in FORBIDDEN[layer]}
    assert not wrong, f"{layer}/ must not import {' or '.join(FORBIDDEN[layer])}:\n" + "\n".join(sorted(wrong))


def test_the_check_sees_late_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from stages.detect import work\n    import pipeline.io\n")
    assert imported(src) == {"stages.detect", "pipeline.io"}
