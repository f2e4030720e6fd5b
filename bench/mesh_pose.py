"""Would a pose-free face mesh read expressions better? (issue 31, twenty-third session)

`canonical_mesh` (pipeline/motion.py) removes each frame's position, scale and roll in the picture: a 2-D
similarity. A turned or nodding head (the rich distractors' yaw and pitch, any real video) still changes the 2-D
shape. The mesh network also gives each point a depth, so a 3-D similarity (Umeyama) of each frame's `STABLE`
points onto a frontal template removes yaw and pitch too. This screens, with the fusion probe (logistic
regression on the fitted head input, as `bench/probe_inputs.py`), the mesh block as it is and:

- `3d_xy`: 3-D aligned, x and y kept (936 numbers, the block's width today);
- `3d_xyz`: 3-D aligned, depth kept (1404);
- `2d_med5`, `3d_xyz_med5`: the same with a 5-frame running median over the chosen frames (the mesh's jitter).

Each variant replaces the cached mesh block; the rest of the input (backbone, flow, HOG) and the folds stay.
Read: the probe on the mean over frames (what `fusion: probe` reads) and on the mean over the annotated apex
frames (a ceiling, probe_inputs.md), whole input and mesh block. The template is the mean 2-D-normalised first-frame
mesh of the screened videos: a screen's stand-in for the fixed frontal template an option would ship.

    python bench/mesh_pose.py --params W/params.yaml --datasets A,B --points /tmp/pts --set extract.motion=flow_hog_mesh ...

Results: bench/results/probe_inputs.md (no variant lifts every column; the mesh stays 2-D).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import median_filter
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pipeline.head.data as head_data  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.facemesh import mesh_crop, mesh_landmarks  # noqa: E402
from pipeline.head.fusion import ProbeFusion  # noqa: E402
from pipeline.motion import STABLE, canonical_mesh, motion_dim  # noqa: E402
from pipeline.video import read_frames  # noqa: E402
from stages.extract import load_tasks  # noqa: E402
from _tables import params_for  # noqa: E402  (beside this script)
from probe_inputs import apex_mean, fitted_input  # noqa: E402

VARIANTS = ("2d", "3d_xy", "3d_xyz", "2d_med5", "3d_xyz_med5")


def mesh_points(params: Path, dataset: str, store: Path) -> dict[str, np.ndarray]:
    """video id -> (T, 468, 3) mesh points of the cached frames (crop pixels), computed once into `store`."""
    if store.is_file():
        with np.load(store) as f:
            return dict(f)
    tasks, _ = load_tasks(load_config(params, dataset=dataset), dataset)
    out = {}
    for t in tqdm(tasks, desc=f"mesh {dataset}"):
        frames = read_frames(Path(t.path), t.frame_index, crop=t.crop)
        out[t.video_id] = mesh_landmarks(np.stack([mesh_crop(frames[int(i)], lm)
                                                   for i, lm in zip(t.frame_index, t.landmarks)]))
    store.parent.mkdir(parents=True, exist_ok=True)
    np.savez(store, **out)
    return out


def similarity_3d(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: scale, rotation, translation minimising |s R src + t - dst|, src and dst (K, 3)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, d, vt = np.linalg.svd(b.T @ a)
    sign = np.ones(3)
    sign[-1] = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag(sign) @ vt
    s = (d * sign).sum() / (a ** 2).sum()
    return s, r, md - s * r @ ms


def template(points: list[np.ndarray]) -> np.ndarray:
    """(468, 3): the mean first-frame mesh, each centred on its `STABLE` points and scaled by their 2-D spread."""
    shapes = []
    for p in points:
        q = p[0].astype(np.float64)
        centre = q[list(STABLE)].mean(0)
        spread = np.sqrt(((q[list(STABLE), :2] - centre[:2]) ** 2).sum(-1).mean())
        shapes.append((q - centre) / spread)
    return np.mean(shapes, 0)


def variant(points: np.ndarray, tmpl: np.ndarray, name: str) -> np.ndarray:
    """(T, 468, 3) points -> (T, width) mesh block of `name`."""
    if name.startswith("2d"):
        block = canonical_mesh(points[..., :2]).reshape(len(points), -1)
    else:
        aligned = []
        for p in points.astype(np.float64):
            s, r, t = similarity_3d(p[list(STABLE)], tmpl[list(STABLE)])
            aligned.append(s * p @ r.T + t)
        block = np.asarray(aligned)[..., :3 if "xyz" in name else 2].reshape(len(points), -1)
    if name.endswith("_med5"):
        block = median_filter(block, size=(5, 1), mode="nearest")
    return block.astype(np.float32)


def measure(params: Path, dataset: str, overrides: list[str], points: dict, tmpl: np.ndarray, name: str) -> dict:
    """pooling -> per-fold probe WAR % with the cache's mesh block replaced by `name`'s."""
    cfg = load_config(params, dataset=dataset, overrides=overrides)
    th = dataclasses.replace(cfg.train_head, fusion="none")
    original = head_data.load_cache

    def with_variant(path):
        cache = original(path)
        blocks = np.stack([variant(points[v], tmpl, name) for v in cache.video_id])
        cache.features = np.concatenate([cache.features[..., :-motion_dim("mesh")], blocks], -1).astype(np.float32)
        return cache

    head_data.load_cache = with_variant
    try:
        data = head_data.load_training_data(cfg, dataset)
    finally:
        head_data.load_cache = original
    x, labels = torch.from_numpy(data.cache.features), data.cache.label
    width = points[data.cache.video_id[0]].shape[1] * (3 if "xyz" in name else 2)
    found: dict[str, list[float]] = {}
    for fold in data.folds:
        xin = fitted_input(th, x, data, fold)
        apex = apex_mean(xin, data)
        half = xin.shape[-1] // 2  # the changing stream of a two-stream input comes first; its mesh block last
        for pool, p in {"mean": xin.mean(1), "apex": apex, "apex, mesh": apex[:, half - width:half]}.items():
            p = p.numpy()
            probe = ProbeFusion.fit(p[fold.train], labels[fold.train], len(data.cache.class_names), th.seed, C=1.0)
            hit = probe(torch.from_numpy(p[fold.test])).numpy().argmax(1) == labels[fold.test]
            found.setdefault(pool, []).append(100 * float(hit.mean()))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, action="append", required=True)
    ap.add_argument("--datasets", required=True)
    ap.add_argument("--points", type=Path, required=True, help="folder for the mesh points (computed once)")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    datasets = args.datasets.split(",")
    overrides = [f"train_head.folds={args.folds}", *args.overrides]
    points = {d: mesh_points(params_for(args.params, d), d, args.points / f"{d}.npz") for d in datasets}
    tmpl = template([p for d in datasets for p in points[d].values()])
    print("| dataset | mesh block | probe, mean over frames | probe at the apex | apex, mesh block |")
    print("|---|---|---|---|---|")
    for d in datasets:
        for name in VARIANTS:
            r = measure(params_for(args.params, d), d, overrides, points[d], tmpl, name)
            print(f"| {d.removeprefix('bench-')} | {name} | "
                  + " | ".join(f"{np.mean(v):.1f} ± {np.std(v):.1f}" for v in r.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
