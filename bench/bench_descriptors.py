"""Does another frame descriptor carry expression across sources better than the detector body? (issue 31, 5)

Reads the feature caches `bench/bench_center.py` made (its `--work` folder and params file) and, on the
same aligned faces (the cached landmarks and chosen frames), computes two classic descriptors that need
no download and no training:

- **HOG** of the aligned grey face (112 px, 16 px cells, 9 orientations: 1296-d a frame);
- **optical flow** from the video's first chosen frame to each frame: `extract.motion: flow` itself
  (pipeline/motion.py, 128-d a frame): motion of brows, lids and mouth, blind to texture; `--flow-grids 4,16`
  also pools the same flow on other grids than 8x8;
- **the detector body pooled by face region** instead of globally (`--regions`): its stage2 and stage3
  maps on the 224-px aligned face averaged over 3 horizontal bands (brows and eyes, nose and cheeks,
  mouth and chin: 1152-d) or a 2x2 grid (1536-d). Global pooling keeps *what* fires, not *where*; the
  action units that tell expressions apart are regional;
- **texture** (`--texture`): uniform LBP histograms (8 neighbours, radius 1: 10 codes) on a 7x7 grid of 16-px cells
  of the 112-px grey face (490-d a frame), and HOG of 14-px cells (1764-d, `extract.motion: flow_hog_fine`) in
  place of flow_hog's 28-px ones, beside the body and the flow as a head input would hold them. Wrinkles and
  furrows (nose wrinkle, the bulge of a lowered brow, a deepened nasolabial fold) are texture more than edges of
  28-px cells;
- **horizontal flips** (`--mirror`): the body + flow + HOG blocks (`extract.motion: flow_hog`) of each video and of
  its mirror image, the product's probe trained on the originals or on both (flipped copies as more training
  videos, the usual FER augmentation), tested on the original or on the mean of both readings.

Baseline in the same run: the cached detector-body features (`retinaface_mnet`, 384-d). Each descriptor
is scored by the same linear probe on two video descriptors, *level* (mean over frames) and *change*
(mean over frames minus the mean of the first 8: "change from the first frames"), with leave-people-out
folds (StratifiedGroupKFold by subject, seed 0, the source's fold count). A probe, not the head: it
answers whether the information is there and linearly readable, cheaply.

    python bench/bench_descriptors.py --work /work/sweep --params /work/sweep/params.yaml \\
        --datasets bench-tps-rich-8-transient,bench-tps-rich-8-sustained
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
from joblib import Parallel, delayed
from skimage.feature import hog, local_binary_pattern
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cache.reader import load_cache  # noqa: E402
from pipeline.align import align  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.io import read_manifest  # noqa: E402
from pipeline.layout import layout_for  # noqa: E402
from pipeline.head.sanity import probe_estimator  # noqa: E402
from pipeline.motion import (GRID, HOG_CELLS, SIZE, flow_fields, hog_features, motion_dim,  # noqa: E402
                             motion_features, pooled_flow)
from pipeline.video import read_frames  # noqa: E402
from _tables import params_for, publish  # noqa: E402  (beside this script)

BASE = 8  # frames whose mean is "the first frames"; faces aligned at motion's SIZE (112), as flow sees them


REGIONS = {"detector body, 3 face bands": (3, 1), "detector body, 2x2 grid": (2, 2)}
BESIDE_HOG = "HOG, 28-px cells (extract.motion: flow_hog)"
BESIDE = (("detector body", "optical flow"), ("detector body", "optical flow", BESIDE_HOG))
"""`--beside`: the blocks a head input would hold side by side, scored together by the product's probe."""
LBP = "uniform LBP, 7x7 grid of 16-px cells"
HOG14 = "HOG, 14-px cells"
TEXTURE = (("detector body", "optical flow", BESIDE_HOG), ("detector body", "optical flow", BESIDE_HOG, LBP),
           ("detector body", "optical flow", HOG14), ("detector body", "optical flow", HOG14, LBP),
           ("detector body", BESIDE_HOG), ("detector body", HOG14))
"""`--texture`: flow_hog's blocks (the baseline), with LBP beside, with finer HOG cells, and both; then `hog`'s
blocks (the wild family's, no flow) with 28- and 14-px cells."""
LBP_CELL, LBP_CODES = 16, 10  # uniform patterns of 8 neighbours: 9 uniform codes + 1 for the rest
MIRRORED = "detector body + optical flow + HOG, 28-px cells, and their horizontal flip"
FLIPPED = MIRRORED + ": flipped"
MIRROR_RULES = {"level : change, C = 1": (False, False),
                "test: mean with the flipped video": (False, True),
                "train: flipped copies too": (True, False),
                "train: flipped copies too; test: mean with the flipped video": (True, True)}
"""`--mirror`: (train on the flipped copies too, average the test reading with the flipped video's)."""
_BODY = None


def body():
    """The detector body as extract builds it, once per worker process (one thread)."""
    import torch

    from pipeline.backbones.mnet import build_mnet_features

    global _BODY
    if _BODY is None:
        torch.set_num_threads(1)
        _BODY = build_mnet_features().eval()
    return _BODY


def regional(crops: np.ndarray) -> dict[str, np.ndarray]:
    """The detector body's stage2 and stage3 maps (`RetinaFaceMNetFeatures.maps`, before its global pooling)
    averaged over each of `REGIONS`' layouts, on 224-px aligned crops as extract gives the body."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        s2, s3 = body().maps(x)
        return {name: torch.cat([F.adaptive_avg_pool2d(s, size).flatten(1) for s in (s2, s3)], 1).numpy()
                for name, size in REGIONS.items()}


def flow_hog_frames(crops: np.ndarray) -> np.ndarray:
    """(T, 224, 224, 3) aligned RGB crops -> (T, D) the detector body's pooled features beside the flow and HOG of
    `extract.motion: flow_hog` (pipeline/motion.py), as a head input holds them."""
    import torch

    with torch.no_grad():
        pooled = body()(torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()).numpy()
    return np.concatenate([pooled, motion_features(crops, "flow_hog")], axis=1)


def lbp_grid(grey: list[np.ndarray]) -> np.ndarray:
    """Grey SIZE-px faces -> (T, 490) float32: per 16-px cell the fraction of pixels with each uniform LBP code."""
    n = SIZE // LBP_CELL
    out = []
    for g in grey:
        codes = local_binary_pattern(g, 8, 1, method="uniform").astype(np.int64)  # 0..9
        cells = codes.reshape(n, LBP_CELL, n, LBP_CELL).transpose(0, 2, 1, 3).reshape(n * n, -1)
        out.append(np.stack([np.bincount(c, minlength=LBP_CODES) for c in cells]).reshape(-1) / LBP_CELL ** 2)
    return np.stack(out).astype(np.float32)


def video_descriptors(path: str, crop: str | None, index: np.ndarray, landmarks: np.ndarray,
                      regions: bool = False, flow_grids: tuple[int, ...] = (), beside: bool = False,
                      mirror: bool = False, texture: bool = False) -> dict[str, np.ndarray]:
    """Per-frame HOG and flow (also pooled on each of `flow_grids`; with `regions` the body's regional pooling,
    with `mirror` the flow_hog blocks of the video and of its mirror image) of one video's chosen frames, aligned
    as extract aligns them."""
    frames = read_frames(Path(path), index, crop=crop)
    crops = np.stack([align(frames[int(i)], lm, SIZE) for i, lm in zip(index, landmarks)])
    grey = [cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in crops]
    h = np.stack([hog(g, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2)) for g in grey])
    fields = flow_fields(crops)
    out = {"HOG": h.astype(np.float32), "optical flow": pooled_flow(fields, GRID)}
    if beside or texture:
        out[BESIDE_HOG] = hog_features(grey)
    if texture:
        out[LBP] = lbp_grid(grey)
        out[HOG14] = hog_features(grey, HOG_CELLS["hog_fine"])
    out |= {f"optical flow, {g}x{g} grid": pooled_flow(fields, g) for g in flow_grids if g != GRID}
    if regions or mirror:
        full = np.stack([align(frames[int(i)], lm, 224) for i, lm in zip(index, landmarks)])
        if regions:
            out |= regional(full)
        if mirror:
            out |= {MIRRORED: flow_hog_frames(full), FLIPPED: flow_hog_frames(full[:, :, ::-1])}
    return out


def probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, estimator=None) -> tuple[float, float]:
    """WAR mean and std over leave-people-out folds of `estimator()` (default: standardised logistic regression,
    C = 0.1)."""
    estimator = estimator or (lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)))
    accs = []
    for tr, te in StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(x, y, groups):
        model = estimator().fit(x[tr], y[tr])
        accs.append(100 * float((model.predict(x[te]) == y[te]).mean()))
    return float(np.mean(accs)), float(np.std(accs))


def level_change(frames: np.ndarray) -> np.ndarray:
    """(N, T, D) per-frame blocks -> (N, 2D) each video's level (mean over frames) beside its change (that mean
    minus the first BASE frames' mean)."""
    return np.concatenate([frames.mean(1), (frames - frames[:, :BASE].mean(1, keepdims=True)).mean(1)], axis=-1)


def beside_rows(blocks: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray, folds: int,
                sets: tuple[tuple[str, ...], ...] = BESIDE) -> list[dict]:
    """Each of `sets`' blocks concatenated, each video's level and change side by side, scored with the probe that
    train-head fits (`sanity.probe_estimator`, C = 1) on the same leave-people-out folds."""
    out = []
    for names in sets:
        f = np.concatenate([blocks[n] for n in names], axis=-1)
        x = level_change(f)
        m, sd = probe(x, y, groups, folds, lambda: probe_estimator(0, 1.0))
        out.append({"descriptor": " + ".join(names), "video": "level : change, C = 1", "war": m, "war_std": sd,
                    "dim": int(f.shape[-1])})
    return out


def mirror_rows(frames: np.ndarray, flipped: np.ndarray, y: np.ndarray, groups: np.ndarray,
                folds: int) -> list[dict]:
    """`MIRROR_RULES` with the product's probe (C = 1) on each video's level : change, same folds as `probe`."""
    x, xf = level_change(frames), level_change(flipped)
    accs: dict[str, list[float]] = {rule: [] for rule in MIRROR_RULES}
    for tr, te in StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(x, y, groups):
        fitted = {False: probe_estimator(0, 1.0).fit(x[tr], y[tr]),
                  True: probe_estimator(0, 1.0).fit(np.concatenate([x[tr], xf[tr]]), np.concatenate([y[tr], y[tr]]))}
        for rule, (augment, both) in MIRROR_RULES.items():
            model = fitted[augment]
            p = model.predict_proba(x[te]) + (model.predict_proba(xf[te]) if both else 0.0)
            accs[rule].append(100 * float((p.argmax(1) == y[te]).mean()))
    return [{"descriptor": MIRRORED, "video": rule, "war": float(np.mean(a)), "war_std": float(np.std(a)),
             "dim": int(frames.shape[-1])} for rule, a in accs.items()]


def measure(params: Path, dataset: str, folds: int, jobs: int, regions: bool = False,
            flow_grids: tuple[int, ...] = (), beside: bool = False, mirror: bool = False,
            texture: bool = False) -> list[dict]:
    cfg = load_config(params, dataset=dataset)
    lay = layout_for(cfg, dataset)
    cached = load_cache(lay.features)
    row_of = {v: i for i, v in enumerate(cached.video_id)}
    rows = {r.video_id: r for r in read_manifest(lay.manifest) if r.ok}
    ids = [v for v in cached.video_id if v in rows]
    with h5py.File(lay.faces, "r") as faces, h5py.File(lay.frames, "r") as chosen:
        tasks = [(rows[v].path, rows[v].crop_side, chosen[v]["frame_index"][:],
                  faces[v]["landmarks"][:][chosen[v]["frame_index"][:]]) for v in ids]
    t0 = time.time()
    per_video = Parallel(n_jobs=jobs)(delayed(video_descriptors)(*t, regions, flow_grids, beside, mirror, texture)
                                      for t in tqdm(tasks, desc=dataset, unit="video"))
    seconds = time.time() - t0
    sel = [row_of[v] for v in ids]
    y, groups = cached.label[sel], np.asarray(cached.subject)[sel]
    frames = {"detector body (baseline)": cached.features[sel].astype(np.float32)}
    frames |= {name: np.stack([d[name] for d in per_video]) for name in per_video[0]}
    side = {n: frames.pop(n) for n in (BESIDE_HOG, LBP, HOG14) if n in frames}  # scored only beside the others
    mirrored, flipped = frames.pop(MIRRORED, None), frames.pop(FLIPPED, None)
    out = []
    if mirror:
        for r in mirror_rows(mirrored, flipped, y, groups, folds):
            out.append({"dataset": dataset, **r, "n_videos": len(ids), "seconds": round(seconds, 1)})
            print(json.dumps(out[-1]), flush=True)
    if beside or texture:  # the body alone: the cache's columns before any motion extract appended
        body = cached.feature_dim - motion_dim(str(cached.attrs.get("motion", "none")))
        blocks = {"detector body": frames["detector body (baseline)"][..., :body],
                  "optical flow": frames["optical flow"], **side}
        sets = (BESIDE if beside else ()) + (TEXTURE if texture else ())
        for r in beside_rows(blocks, y, groups, folds, tuple(dict.fromkeys(sets))):
            out.append({"dataset": dataset, **r, "n_videos": len(ids), "seconds": round(seconds, 1)})
            print(json.dumps(out[-1]), flush=True)
    for name, f in frames.items():
        level, change = f.mean(1), (f - f[:, :BASE].mean(1, keepdims=True)).mean(1)
        for kind, x in (("level", level), ("change", change)):
            m, s = probe(x, y, groups, folds)
            out.append({"dataset": dataset, "descriptor": name, "video": kind, "war": m, "war_std": s,
                        "dim": int(f.shape[-1]), "n_videos": len(ids), "seconds": round(seconds, 1)})
            print(json.dumps(out[-1]), flush=True)
    return out


def write(rows: list[dict], out: Path, argv: list[str]) -> None:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    keys = list(dict.fromkeys((r["descriptor"], r["video"]) for r in rows))
    cell = {(r["descriptor"], r["video"], r["dataset"]): r for r in rows}
    lines = ["# Frame descriptors across sources: linear probe (issue 31, item 5)", "",
             f"`python bench/bench_descriptors.py {' '.join(argv)}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores. Linear probe "
             "(standardised, logistic regression C=0.1) on a video descriptor, leave-people-out folds; WAR %, "
             "mean ± std over folds; chance 16.7 %. *change*: mean over frames minus the first 8 frames' mean.", "",
             "| descriptor | video | " + " | ".join(d.removeprefix("bench-") for d in datasets) + " | **min** |",
             "|---|---|" + "---|" * (len(datasets) + 1)]
    for d, v in keys:
        vals = [cell[(d, v, ds)] for ds in datasets if (d, v, ds) in cell]
        lines.append(f"| {d} | {v} | " + " | ".join(f"{c['war']:.1f} ± {c['war_std']:.1f}" for c in vals)
                     + f" | **{min(c['war'] for c in vals):.1f}** |")
    publish(out, "\n".join(lines) + "\n", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="bench_center.py's --work folder")
    ap.add_argument("--params", type=Path, action="append", required=True,
                    help="its params file(s) (one per sweep part); each dataset is read with the first that lists it")
    ap.add_argument("--datasets", required=True, help="comma list")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--regions", action="store_true", help="also the detector body pooled by face region")
    ap.add_argument("--flow-grids", default="", help="comma list: also the flow pooled on these grids (e.g. 12,16)")
    ap.add_argument("--beside", action="store_true",
                    help="also the body + flow, and + HOG (extract.motion: flow_hog), side by side, with the "
                         "product's probe")
    ap.add_argument("--mirror", action="store_true",
                    help="also the flow_hog blocks with horizontal flips: as more training videos, and/or averaged "
                         "with the original at test")
    ap.add_argument("--texture", action="store_true",
                    help="also uniform LBP histograms and 14-px HOG beside the body and the flow, with the product's "
                         "probe")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "descriptors.md")
    args = ap.parse_args()
    rows = []
    for ds in args.datasets.split(","):
        grids = tuple(int(g) for g in args.flow_grids.split(",") if g)
        rows += measure(params_for(args.params, ds), ds, args.folds, args.jobs, args.regions, grids, args.beside,
                        args.mirror, args.texture)
        write(rows, args.out, sys.argv[1:])
    print(args.out.read_text())


if __name__ == "__main__":
    main()
