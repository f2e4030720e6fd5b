from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.complexity import PAPER_GMACS, complexity_markdown, complexity_report


@pytest.mark.slow
def test_gmacs_within_one_percent_of_the_paper():
    rows = complexity_report()
    assert {(r["variant"], r["frames_per_clip"]) for r in rows} == {(v, k) for v in ("paper", "authors")
                                                                    for k in PAPER_GMACS}
    for r in rows:
        assert abs(r["total_gmacs"] - r["paper_gmacs"]) / r["paper_gmacs"] < 0.01, r
        assert 0 < r["head_gmacs"] < 0.2  # the backbone dominates (Table 9)
    assert rows[0]["backbone_params_m"] == 11.177  # torchvision ResNet-18 without its fc
    assert "FlopCounterMode" in complexity_markdown(rows)
    # docs/head.md quotes the command's totals; a change to the head that moves them must update the doc.
    doc = (Path(__file__).resolve().parents[2] / "docs" / "head.md").read_text()
    for variant in ("paper", "authors"):
        printed = " / ".join(f"{r['total_gmacs']:.2f}" for r in rows if r["variant"] == variant)
        assert printed in doc, (variant, printed)
