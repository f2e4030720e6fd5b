"""Which map should the emotion-rich clip be read from? (`train_head.rich_clip`, issue 31)

Eq. 6 reads the emotion-rich clip from the head's activation map (`head`, the paper). With `fusion: probe` a second
reading exists: where in the video the fused linear probe finds the predicted class, its logit on each test clip's
pooled input (`probe`, pipeline/head/fusion.py). The choice changes no class probability, only the clip, so both
are read from the same trained heads: every fold checkpoint `bench_center.py` left in a `--work` folder is run once
on its test videos (`predict`, the checkpoint's own scoring), and the clip is read under each rule.

Strict: the clip's centre frame lies inside the annotated apex span; overlap: the clip meets it (Table 7's
criterion). Beside them the centre clip and a uniformly random one, and each rule split by whether the video's class
was right (a wrong class's map has no reason to find the apex). Transient sources only (sustained clips hold the
expression throughout: no apex span).

    python bench/bench_center.py --work W --sources au:rich:8 --flavours transient --options two_stream_first ...
    python bench/bench_rich_clip.py --work W [--work W2 ...] --out bench/results/rich_clip.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cache.reader import load_cache  # noqa: E402
from pipeline.head.fusion import rich_clip_map, rich_clips  # noqa: E402
from pipeline.head.inputs import head_input  # noqa: E402
from pipeline.head.sampling import ClipSampler  # noqa: E402
from pipeline.head.sanity import ClipSpans, localisation  # noqa: E402
from pipeline.head.train import load_head, predict  # noqa: E402
from pipeline.io import read_manifest  # noqa: E402
from _tables import publish  # noqa: E402  (beside this script)
from bench_detect import machine_info, machine_lines  # noqa: E402

RULES = ("head", "probe")


def read_source(data: Path, results: Path) -> dict:
    """One bench_center dataset's test videos under every rule: chosen clips, right/wrong, apex spans."""
    cache = load_cache(data / "features")
    by_id = {r.video_id: r for r in read_manifest(data / "manifest.csv")}
    row_of = {v: i for i, v in enumerate(cache.video_id)}
    out: dict = {"rows": [], "right": [], **{r: [] for r in RULES}}
    spans = None
    for ck in sorted((results / "checkpoints").glob("fold-*.pt")):
        head = load_head(ck)
        fusion = getattr(head.model, "fusion", None)
        if fusion is None:
            raise SystemExit(f"{ck}: trained without fusion: probe, so there is no probe to read a clip from")
        feats = torch.from_numpy(head_input(cache.features, head.config, cache.subject, len(head.class_names)))
        rows = torch.tensor([row_of[v] for v in head.test_video_ids])
        sampler = ClipSampler.from_config(head.config, feats.shape[1])
        spans = ClipSpans.of(sampler.n_clips, sampler.test_offset, sampler.clip_stride, sampler.clip_len)
        with torch.no_grad():
            got = predict(head.model, feats, rows, sampler)
            for rule in RULES:
                fusion.locates = rule == "probe"
                maps = rich_clip_map(head.model, fusion, got["clip_scores"], feats, rows, sampler)
                out[rule].append(rich_clips(maps, got["probs"]).numpy())
        out["rows"].append(rows.numpy())
        out["right"].append(got["probs"].argmax(1).numpy() == cache.label[rows.numpy()])
    rows = np.concatenate(out["rows"])
    apex = [(by_id[cache.video_id[i]].apex_start, by_id[cache.video_id[i]].apex_end) for i in rows]
    return {"frames": cache.frame_index[rows], "apex": apex, "right": np.concatenate(out["right"]), "spans": spans,
            **{r: np.concatenate(out[r]) for r in RULES}}


def score(src: dict) -> dict:
    """Strict and overlap hit rates per rule, overall and on the videos whose class was right, and the baselines."""
    row = {"videos": len(src["apex"]), "war": round(100 * float(src["right"].mean()), 1)}
    for rule in RULES:
        loc = localisation(src["frames"], src["apex"], src[rule], src["spans"])
        row[f"{rule}_strict"], row[f"{rule}_overlap"] = loc["strict"], loc["overlap"]
        row["centre_strict"], row["random_strict"] = loc["centre_strict"], loc["random_strict"]
        for name, sel in (("right", src["right"]), ("wrong", ~src["right"])):
            part = localisation(src["frames"][sel], [a for a, s in zip(src["apex"], sel) if s], src[rule][sel],
                                src["spans"]) if sel.any() else None
            row[f"{rule}_strict_{name}"] = None if part is None else part["strict"]
    return row


def table(rows: list[dict]) -> str:
    def cell(v):
        return "" if v is None else f"{v:.1f}"

    lines = ["| source | videos | WAR % | strict: head | strict: probe | head, right / wrong class | "
             "probe, right / wrong class | overlap: head / probe | centre clip | random clip |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['source']} | {r['videos']} | {r['war']:.1f} | {cell(r['head_strict'])} | "
                     f"{cell(r['probe_strict'])} | {cell(r['head_strict_right'])} / {cell(r['head_strict_wrong'])} | "
                     f"{cell(r['probe_strict_right'])} / {cell(r['probe_strict_wrong'])} | "
                     f"{cell(r['head_overlap'])} / {cell(r['probe_overlap'])} | {cell(r['centre_strict'])} | "
                     f"{cell(r['random_strict'])} |")
    worst = {rule: min(r[f"{rule}_strict"] for r in rows) for rule in RULES}
    lines += ["", "Worst strict column: " + ", ".join(f"`{k}` {v:.1f}" for k, v in worst.items()) + "."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, action="append", required=True, help="a bench_center.py --work folder")
    ap.add_argument("--option", default="two_stream_first", help="the bench_center option whose heads to read")
    ap.add_argument("--demo", type=Path, default=None, help="also a repo whose data/demo and results/demo to read")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "rich_clip.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    pairs = [(w / "data" / r.name, r) for w in args.work for r in sorted((w / "results" / args.option).iterdir())
             if "transient" in r.name and (r / "metrics.json").exists()]  # finished runs only
    if args.demo is not None:
        pairs.append((args.demo / "data" / "demo", args.demo / "results" / "demo"))
    rows = []
    for data, res in pairs:
        print(f"reading {res}", flush=True)
        rows.append({"source": res.name.removeprefix("bench-"), **score(read_source(data, res))})
    text = "\n".join([f"# `python bench/bench_rich_clip.py {' '.join(sys.argv[1:])}`", "",
                      "Strict apex localisation % of the emotion-rich clip read from each map, the same heads "
                      "(the checkpoints' own class probabilities):", "", table(rows), "", "Machine:", "",
                      *machine_lines(machine_info())])
    publish(args.out, text, rows)


if __name__ == "__main__":
    main()
