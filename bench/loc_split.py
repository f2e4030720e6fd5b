"""Does the emotion-rich clip miss the apex because the video was misclassified? (issue 31)

Reads a finished train-head run (its predictions.csv) beside the dataset's manifest apex spans and resample's
frame numbers, and splits the strict clip localisation (`pipeline.head.sanity.localisation`: the chosen clip's
centre frame inside the apex span) by whether the video was classified right. Also the ceiling: the share of
videos where some test clip's centre lies in the apex at all. No training; seconds.

    python bench/loc_split.py --params W/params-tps-rich-8_au-rich-8.yaml --dataset bench-au-rich-8-transient \\
        --results W/results/two_stream_first/bench-au-rich-8-transient
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.head.report import read_predictions  # noqa: E402
from pipeline.head.sanity import ClipSpans, localisation  # noqa: E402
from pipeline.io import read_manifest  # noqa: E402
from pipeline.layout import layout_for, results_for  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--results", type=Path, default=None, help="the run's results folder (default: the params')")
    args = ap.parse_args()
    cfg = load_config(args.params, dataset=args.dataset)
    th = cfg.train_head
    spans = ClipSpans.of(th.n_clips, th.test_offset, th.clip_stride, th.clip_len)
    preds, _ = read_predictions((args.results or results_for(cfg, args.dataset).root) / "predictions.csv")
    layout = layout_for(cfg, args.dataset)
    apex = {r.video_id: (r.apex_start, r.apex_end) for r in read_manifest(layout.manifest)}
    with h5py.File(layout.frames, "r") as f:
        frame_index = np.stack([f[p.video_id]["frame_index"][()] for p in preds])
    # predictions.csv names the chosen clip by its first original frame; its index is the test clip starting there
    chosen = np.array([int(np.flatnonzero(fi[spans.start] == p.rich_clip_start)[0]) for fi, p in zip(frame_index, preds)])
    right = np.array([p.true == p.predicted for p in preds])
    spans_apex = [apex[p.video_id] for p in preds]
    reachable = [a is not None and bool(((fi[spans.centre] >= a[0]) & (fi[spans.centre] <= a[1])).any())
                 for fi, a in zip(frame_index, spans_apex)]
    print(f"{args.dataset}: {len(preds)} videos, WAR {100 * right.mean():.1f} %, "
          f"a clip centre inside the apex possible for {100 * np.mean(reachable):.1f} %")
    for name, rows in (("all", np.arange(len(preds))), ("classified right", np.flatnonzero(right)),
                       ("classified wrong", np.flatnonzero(~right))):
        loc = localisation(frame_index[rows], [spans_apex[i] for i in rows], chosen[rows], spans)
        print(f"  {name:16s} n = {len(rows):3d}  strict {loc['strict'] if loc else float('nan'):.1f} %")


if __name__ == "__main__":
    main()
