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
