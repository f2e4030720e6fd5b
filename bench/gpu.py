"""Everything issue 28 asks of a GPU, in one call that fits 8 minutes on one H100/H200 with 16 cores.

    python bench/gpu.py                 # on the GPU machine: writes bench/results/gpu.md (newest run first)
    python bench/gpu.py --tiny          # CPU smoke run of the same code paths (< 3 min), writes /tmp/gpu_tiny.md
    bash bench/gpu.sh                   # the same as the first line, with the environment printed first

Parts, each timed apart and reported with the limit it sets (a failing part is recorded in the table
with its error and the script exits 1 at the end; the others still run):

1. extract end to end: the bench videos (every real face video of tests/data/videos and
   ../shared/testdata/videos) listed `--videos` times in total (2,000 by default; symlinks) as a
   `folder` dataset; `registry.stage(name).run` for manifest, detect, resample and extract with params.yaml's defaults plus
   the GPU settings (detect: torch RetinaFace port on CUDA, 12 worker processes; extract: ResNet-18
   bf16, batch 512, 12 decode/align workers, `weights: random`). Per stage: seconds and output
   frames/s; plus the ceilings measured alone: decode (all cores, frames/s), the detector network
   at the chosen input size, ResNet-18 bf16 on 224x224 crops (crops/s).
2. head training, DFEW size: 12,059 videos x 105 frames x 512-d synthetic features written with the
   project's shard writer (`cache.store.write_shard`), then `pipeline run train-head --no-deps`
   through the CLI (so it runs whatever training path main has: batched folds when merged), 5
   subject-independent folds x 120 epochs, batch `--head-batch`.
3. fine-tuning crops/s: `bench/bench_finetune.py --gpu` (ResNet-18, 224 px), its table copied.

Targets (issue 28): extract >= 3,000 output frames/s end to end; DFEW-size head <= 1 min;
fine-tuning >= 3,000 crops/s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for p in (REPO, BENCH):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_detect import LONG_VIDEO, REPO_VIDEOS, SHARED_VIDEOS, machine_info, machine_lines  # noqa: E402
from bench_extract import DS, load, make_dataset, write_params  # noqa: E402

DFEW = {"videos": 12059, "subjects": 2400, "classes": ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]}
TINY = {"videos": 2, "head_videos": 60, "head_folds": 2, "head_epochs": 2, "head_batch": 8}


def bench_videos() -> list[Path]:
    vids = [REPO_VIDEOS / n for n in ("single_face.mp4", "video_01.mp4", "face_noface.mov")]
    return vids + ([SHARED_VIDEOS / LONG_VIDEO] if (SHARED_VIDEOS / LONG_VIDEO).exists() else [])


# ---------------------------------------------------------------------------------------------
# 1. extract end to end, and the ceiling of each part measured alone

def decode_ceiling(videos: list[Path], workers: int) -> float:
    """Frames/s of decoding every frame of `videos` in `workers` processes, nothing else."""
    from pipeline.workers import process_pool

    start = time.perf_counter()
    with process_pool(workers) as pool:
        n = sum(pool.map(_count_frames, [str(v) for v in videos]))
    return n / (time.perf_counter() - start)


def _count_frames(path: str) -> int:
    from pipeline.video import iter_frames

    return sum(1 for _ in iter_frames(Path(path)))


def detector_ceiling(cfg, size: int, batch: int, seconds: float = 3.0) -> float:
    """Frames/s of the detector alone (preprocess + network + decode boxes) on one real frame repeated."""
    from pipeline.detector import build_detector
    from pipeline.video import read_frames

    det = build_detector(cfg.detect)
    frame = read_frames(REPO_VIDEOS / "single_face.mp4", np.array([0]))[0]
    frames = [frame] * batch
    det.detect(frames, size)  # warm-up (cudnn autotune, allocations)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        det.detect(frames, size)
        n += batch
    return n / (time.perf_counter() - start)


def backbone_ceiling(cfg, batch: int, seconds: float = 3.0) -> float:
    """Crops/s of the configured backbone alone (uint8 crops in host memory to features in host memory)."""
    from pipeline.features import build_extractor

    fe = build_extractor(cfg.extract)
    crops = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    fe(crops)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fe(crops)
        n += batch
    return n / (time.perf_counter() - start)


def part_extract(work: Path, n_videos: int, gpu: bool, workers: int) -> list[str]:
    import h5py

    from pipeline.registry import stage

    src = bench_videos()
    videos = [src[i % len(src)] for i in range(n_videos)]
    root = work / "videos"
    make_dataset(root, videos)
    params = write_params(work, root, {})
    sets = {"extract__weights": "random", "detect__workers": workers, "extract__workers": workers}
    if gpu:
        sets.update(detect__device="cuda", detect__runtime="torch", detect__batch_size=64, extract__device="cuda",
                    extract__precision="bf16", extract__batch_size=512)
    else:
        sets.update(detect__device="cpu", extract__device="cpu")
    cfg = load(params, work / "data", **sets)
    t: dict[str, float] = {}
    for name in ("manifest", "detect", "resample", "extract"):
        start = time.perf_counter()
        stage(name).run(cfg, dataset=DS, force=True)
        t[name] = time.perf_counter() - start
    lay = cfg.dataset_dir(DS)
    with h5py.File(lay / "faces.h5", "r") as f:
        decoded = sum(int(f[k].attrs["n_frames"]) for k in _leaf_groups(f))
        sizes = sorted({int(f[k].attrs["det_size"]) for k in _leaf_groups(f)})
    with h5py.File(lay / "features" / "index.h5", "r") as f:
        cached = int(f["features"].shape[0]) * int(f["features"].shape[1])
    total = sum(t.values())
    batch = 64 if gpu else 16
    ceilings = {
        "decode (every frame, all workers)": f"{decode_ceiling(videos[:max(len(src), min(64, n_videos))], workers):,.0f} frames/s",
        f"detector alone at {sizes[0]} px, batch {batch}": f"{detector_ceiling(cfg, sizes[0], batch):,.0f} frames/s",
        f"ResNet-18 alone, batch {cfg.extract.batch_size}": f"{backbone_ceiling(cfg, cfg.extract.batch_size):,.0f} crops/s",
    }
    rows = [f"| extract end to end ({len(videos)} videos, {decoded:,} decoded frames, {cached:,} output frames) | "
            f"{total:.1f} s | **{cached / total:,.0f} output frames/s** (target ≥ 3,000) |"]
    per_stage = {"manifest": decoded, "detect": decoded, "resample": cached, "extract": cached}
    unit = {"manifest": "decoded", "detect": "decoded", "resample": "output", "extract": "output"}
    rows += [f"| · {k} | {v:.1f} s | {per_stage[k] / v:,.0f} {unit[k]} frames/s |" for k, v in t.items()]
    rows += [f"| · ceiling: {k} | | {v} |" for k, v in ceilings.items()]
    rows.append(f"| · detector input sizes chosen (long side) | | {', '.join(map(str, sizes))} |")
    return rows


def _leaf_groups(f) -> list[str]:
    out: list[str] = []
    f.visititems(lambda name, obj: out.append(name) if hasattr(obj, "attrs") and "n_frames" in obj.attrs else None)
    return out


# ---------------------------------------------------------------------------------------------
# 2. head training on a DFEW-size synthetic cache, through the CLI

def write_synthetic_cache(features: Path, n: int, n_subjects: int, classes: list[str], dim: int = 512) -> None:
    """n videos x 105 frames x dim of class-dependent noise, written with the project's shard writer."""
    from cache.store import ShardRecord, write_index, write_shard

    rng = np.random.default_rng(0)
    means = rng.standard_normal((len(classes), dim)).astype(np.float32)
    attrs = {"backbone": "resnet18", "feature_dim": dim, "weights": "synthetic:gpu_bench", "weights_sha256": "",
             "class_names": classes, "dataset": "dfewsyn", "signature": "synthetic", "params": {}}
    features.mkdir(parents=True, exist_ok=True)
    for s, start in enumerate(range(0, n, 256)):
        records = []
        for i in range(start, min(n, start + 256)):
            label = int(rng.integers(len(classes)))
            feats = (means[label] + 2.0 * rng.standard_normal((105, dim), dtype=np.float32)).astype(np.float16)
            records.append(ShardRecord(f"v{i:05d}", label, f"S{i % n_subjects:04d}", feats, np.arange(105, dtype=np.int32),
                                       np.ones(105, np.uint8), np.zeros((105, 5, 2), np.float32), None))
        write_shard(features / f"shard-{s:05d}.h5", records, attrs)
    write_index(features)


def part_head(work: Path, n: int, folds: int, epochs: int, batch: int, gpu: bool) -> list[str]:
    start = time.perf_counter()
    write_synthetic_cache(work / "data" / "dfewsyn" / "features", n, min(DFEW["subjects"], max(folds * 3, n // 5)),
                          DFEW["classes"])
    setup = time.perf_counter() - start
    params = work / "params_head.yaml"
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.update(dataset="dfewsyn", data_root=str(work / "data"), results_root=str(work / "results"), repro=["dfewsyn"],
               datasets={"dfewsyn": {"adapter": "folder", "root": str(work / "none")}})
    params.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "train-head", "--params", str(params), "--dataset", "dfewsyn",
           "--no-deps", "--folds", str(folds), "--set", f"train_head.epochs={epochs}",
           "--set", f"train_head.batch_size={batch}", "--set", f"train_head.device={'cuda' if gpu else 'cpu'}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    metrics = json.loads((work / "results" / "dfewsyn" / "metrics.json").read_text())
    # every video is in the training set of folds - 1 folds
    return [f"| head: `pipeline run train-head` ({n:,} videos, {folds} folds x {epochs} epochs, batch {batch}) | "
            f"{wall:.1f} s | {n * (folds - 1) * epochs / wall:,.0f} training videos/s "
            f"(target ≤ 60 s; WAR on the synthetic classes {metrics['war']:.1f} %) |",
            f"| · writing the synthetic cache (not timed above) | {setup:.1f} s | |"]


# ---------------------------------------------------------------------------------------------
# 3. fine-tuning crops/s through bench_finetune.py

def part_finetune(work: Path, gpu: bool, tiny: bool) -> list[str]:
    out = work / "finetune.md"
    args = (["--gpu", "--backbones", "resnet18", "--sizes", "224", "--videos", "256", "--frames", "16"] if gpu else
            ["--backbones", "retinaface_mnet", "--sizes", "112", "--videos", "2", "--frames", "2", "--batch", "4"])
    proc = subprocess.run([sys.executable, str(BENCH / "bench_finetune.py"), *args, "--out", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_finetune.py exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    table = [ln for ln in out.read_text().splitlines() if ln.startswith("| ") and "crops/s" not in ln
             and not ln.startswith("|---")]
    return [f"| fine-tuning: {' · '.join(c.strip() for c in ln.strip('|').split('|')[:-1])} | | "
            f"{ln.strip('|').split('|')[-1].strip()} crops/s (target ≥ 3,000) |" for ln in table]


# ---------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run at toy sizes (< 3 min)")
    ap.add_argument("--videos", type=int, default=2000, help="extract: the bench videos listed this many times in total")
    ap.add_argument("--workers", type=int, default=12, help="detect/extract worker processes")
    ap.add_argument("--head-batch", type=int, default=256)
    ap.add_argument("--parts", default="extract,head,finetune")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch

    gpu = not args.tiny
    if gpu and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: torch sees no CUDA device (use --tiny for the CPU smoke run)")
    out = args.out or (Path(tempfile.gettempdir()) / "gpu_tiny.md" if args.tiny else BENCH / "results" / "gpu.md")
    info = machine_info()
    rows = ["| part | seconds | rate (and target) |", "|---|---|---|"]
    failed = []
    work = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    began = time.perf_counter()
    parts = {
        "extract": lambda: part_extract(work / "extract", TINY["videos"] if args.tiny else args.videos, gpu,
                                        2 if args.tiny else args.workers),
        "head": lambda: part_head(work / "head", *((TINY["head_videos"], TINY["head_folds"], TINY["head_epochs"],
                                                     TINY["head_batch"]) if args.tiny else
                                                    (DFEW["videos"], 5, 120, args.head_batch)), gpu),
        "finetune": lambda: part_finetune(work, gpu, args.tiny),
    }
    title = "# GPU in one call (bench/gpu.py)\n\nNewest run first; older runs kept below.\n"
    older = out.read_text().split("\n", 1)[1].replace("\nNewest run first; older runs kept below.\n", "", 1) \
        if out.exists() and not args.tiny else ""

    def write(done: bool) -> str:
        """The table so far, newest run on top: written after every part, so a call cut short keeps its rows."""
        text = "\n".join([
            f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {info.get('gpu', 'CPU (tiny smoke run)')}, "
            f"{info['nproc']} cores{' — TINY' if args.tiny else ''}{'' if done else ' (in progress)'}",
            "",
            f"`python bench/gpu.py {' '.join(sys.argv[1:])}` — {time.perf_counter() - began:.0f} s"
            f"{' in all' if done else ' so far'}. "
            "Method: the docstring of bench/gpu.py.",
            "",
            *rows,
            "",
            *machine_lines(info),
            "",
        ])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(title + "\n" + text + "\n" + older.lstrip("\n"))
        return text

    try:
        for name in args.parts.split(","):
            start = time.perf_counter()
            try:
                new = parts[name]()
            except Exception as err:  # recorded in the table, the other parts still run; exit 1 at the end
                traceback.print_exc()
                failed.append(name)
                new = [f"| {name}: FAILED ({type(err).__name__}: {str(err).splitlines()[0][:200]}) | "
                       f"{time.perf_counter() - start:.1f} s | |"]
            rows += new
            print("\n".join(new), flush=True)
            write(done=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + write(done=True))
    print(f"written {out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
