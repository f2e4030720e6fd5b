"""`dvc plots show` draws with no network: the page `pipeline init` configures inlines Vega, checked in a
real headless browser (Chromium) that can reach nothing."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.head.report import write_history

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path, png: Path) -> np.ndarray:
    """The page as Chromium draws it with every request refused: a proxy that does not exist, names that
    resolve nowhere (file:// needs neither), and no network namespace at all where `unshare -n` works."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1000,1400", "--virtual-time-budget=8000",
           f"--screenshot={png}", html.as_uri()]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        cmd = ["unshare", "-n", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def chart_pixels(rgb: np.ndarray) -> int:
    """Coloured pixels (lines, legend marks): text and gridlines are grey, an empty page white."""
    return int(((rgb.max(-1) - rgb.min(-1)) > 60).sum())


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install -y chromium)")
@pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None, reason="needs dvc and git")
@pytest.mark.skipif(importlib.util.find_spec("vl_convert") is None,
                    reason="needs vl-convert-python (the [dvc] extra) for the offline page")
def test_dvc_plots_show_draws_offline(tmp_path):
    proj = tmp_path / "proj"
    res = CliRunner().invoke(main, ["init", str(proj)])
    assert res.exit_code == 0 and "dvc plots show draws offline" in res.output, res.output
    for fold in range(2):  # the history train-head writes, through its own writer
        records = [SimpleNamespace(epoch=e, train_loss=1 / e, train_acc=40 + 5 * e, test_loss=1.2 / e,
                                   test_war=30 + 6 * e + fold, test_uar=30 + 5 * e) for e in range(1, 6)]
        path = proj / "results" / "demo" / "history" / f"fold-{fold}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_history(path, records)
    subprocess.run(["dvc", "plots", "show", "results/demo/history", "-o", "plots"], cwd=proj, check=True,
                   capture_output=True)
    page = proj / "plots" / "index.html"
    html = page.read_text()
    assert "<script src=" not in html and "cdn.jsdelivr" not in html  # nothing to fetch
    assert "one chart per fold" in html  # the title says what is drawn
    drawn = screenshot(page, tmp_path / "offline.png")
    assert chart_pixels(drawn) > 1000, chart_pixels(drawn)
    # The same data on DVC's own page (scripts from a CDN) draws nothing here: the check can fail.
    subprocess.run(["dvc", "config", "--unset", "plots.html_template"], cwd=proj, check=True)
    subprocess.run(["dvc", "plots", "show", "results/demo/history", "-o", "cdn"], cwd=proj, check=True,
                   capture_output=True)
    assert "cdn.jsdelivr" in (proj / "cdn" / "index.html").read_text()
    blank = screenshot(proj / "cdn" / "index.html", tmp_path / "cdn.png")
    assert chart_pixels(blank) < 50, chart_pixels(blank)
