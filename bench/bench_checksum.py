"""What the shard row checksums (issue 16) cost, against extract itself, measured in the same run.

    python bench/bench_checksum.py                 # the shipped clips, each listed 3 times, both backbones
    python bench/bench_checksum.py --copies 6 --out /tmp/checksum.md

What is timed, per backbone (`resnet18` with seeded random weights, `retinaface_mnet`):
- extract: `registry.stage("extract").run(force=True)` on the videos (manifest → detect → resample run once
  before, untimed). This is the baseline, and it includes writing the checksums.
- crc at write: `cache.store.row_crc32` over every cached row, in memory (the extra work inside
  `write_shard`).
- resume check: `stages.extract._all_intact`, the check a rerun of extract makes every time
  before it reports "up to date": open every shard, read every row, CRC it (warm page cache: the
  shards were just written; a cold read adds ~105 KB of disk read per video).
- rerun: `registry.stage("extract").run()` once more, end to end, ending in "up to date (checksums verified)".
- load check: the CRC that `cache.load_cache` runs on the rows it has just read for training.
The budget (issue 16): crc at write + resume check <= 2 % of extract. Both grow with the number of
videos exactly as extract does, so the ratio holds for a larger dataset.
Results: bench/results/checksum_cpu.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _tables import publish  # noqa: E402  (beside this script)

VIDEOS = [REPO / "tests" / "data" / "videos" / n for n in ("single_face.mp4", "video_01.mp4", "face_noface.mov")]
LABELS = ["happiness", "surprise", "sadness"]


def make_dataset(root: Path, copies: int) -> None:
    """root/<label>/<name>-<k>.<ext>: symlinks, each video listed `copies` times under other ids."""
    for i, v in enumerate(VIDEOS):
        d = root / LABELS[i % len(LABELS)]
        d.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            (d / f"{v.stem}-{k}{v.suffix}").symlink_to(v.resolve())


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure(cfg, backbone: str) -> dict:
    import dataclasses

    import h5py

    from cache.integrity import damaged_rows
    from cache.store import CHECKSUM, list_shards, row_crc32
    from pipeline.layout import layout_for
    from pipeline.registry import stage
    from pipeline.state import signature
    from stages import extract

    cfg = dataclasses.replace(cfg, extract=dataclasses.replace(cfg.extract, backbone=backbone, weights="random"))
    summary, t_extract = timed(lambda: stage("extract").run(cfg, dataset="bench", force=True))
    feats = layout_for(cfg, "bench").features
    rows = []
    for s in list_shards(feats):
        with h5py.File(s, "r") as f:
            rows.append((f["features"][:], f[CHECKSUM][:]))
    _, t_crc = timed(lambda: [row_crc32(r) for block, _ in rows for r in block])
    _, t_load = timed(lambda: [damaged_rows(block, crcs) for block, crcs in rows])
    sig = signature(cfg, "bench", "extract")
    intact, t_verify = timed(lambda: extract._all_intact(feats, sig, cfg.extract.keep_crops))
    rerun, t_rerun = timed(lambda: stage("extract").run(cfg, dataset="bench"))
    assert intact and "skipped" in rerun, rerun
    return {"backbone": backbone, "videos": summary["cached"], "shards": summary["shards"],
            "mb": sum(s.stat().st_size for s in list_shards(feats)) / 2**20, "extract": t_extract, "crc": t_crc,
            "verify": t_verify, "rerun": t_rerun, "load": t_load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=3, help="times each shipped clip is listed")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "checksum_cpu.md")
    args = ap.parse_args()

    import yaml

    from pipeline.config import load_config
    from pipeline.registry import stage

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset(tmp / "videos", args.copies)
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        raw.update(dataset="bench", data_root=str(tmp / "data"), results_root=str(tmp / "results"), repro=["bench"],
                   datasets={"bench": {"adapter": "folder", "root": str(tmp / "videos")}})
        raw.setdefault("extract", {}).update(shard_size=4)  # several shards, as a real cache has
        (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
        cfg = load_config(tmp / "params.yaml")
        for name in ("manifest", "detect", "resample"):
            stage(name).run(cfg, dataset="bench")
        results = [measure(cfg, b) for b in ("resnet18", "retinaface_mnet")]
    load_end = os.getloadavg()

    lines = ["# Shard row checksums vs extract (CPU)", "",
             f"{os.cpu_count()} CPUs, load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end (a machine "
             "shared with other jobs: compare the ratios, measured in the same run).", "",
             "| backbone | videos | shards | MB | extract s | crc at write ms | resume check ms | rerun (up to date) s "
             "| load check ms | (crc + resume check) / extract |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = (r["crc"] + r["verify"]) / r["extract"]
        lines.append(f"| {r['backbone']} | {r['videos']} | {r['shards']} | {r['mb']:.1f} | {r['extract']:.2f} | "
                     f"{1e3 * r['crc']:.2f} | {1e3 * r['verify']:.2f} | {r['rerun']:.2f} | {1e3 * r['load']:.2f} | "
                     f"{100 * ratio:.3f} % |")
    lines += ["", "Budget (issue 16): <= 2 % of extract. Per video, the check reads and hashes one (105, D) float16 "
              "row (105 KB for ResNet-18's 512-d features)."]
    text = "\n".join(lines) + "\n"
    publish(args.out, text)


if __name__ == "__main__":
    main()
