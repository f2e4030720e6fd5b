"""Fine-tuning throughput (issue 12): training crops/s of `pipeline.finetune.train.train_fold` and the
per-fold re-extraction's crops/s, against extract's own network path measured in the same run.

    python bench/bench_finetune.py                          # CPU: retinaface_mnet at 112 and 224 px, resnet18 at 224
    python bench/bench_finetune.py --backbones resnet18 --sizes 224 --gpu   # CUDA, bf16 autocast, batch 256

What is timed (crops cut from the shipped face photos with random shifts and stored as extract stores
them, JPEG q95, so the JPEG rows decode what a real pack holds; resnet18 with `weights: random`)
- train (head only): `train_fold` with `train_layers: 0` — forward through the body, classifier step;
- train (last 2 blocks): `train_layers: 2`, `head_epochs: 0`, L2-SP on — forward + the backward the
  adapted blocks need + AdamW; this is the default recipe's cost after its warm-up;
- train (last 2 blocks, streamed): the same, but every batch decoded from a crops pack
  (`finetune.crops_memory_gb` exceeded: `StreamedCrops`, nvJPEG with --gpu) instead of one resident tensor;
- decode (batched decode_jpeg): the pack's crops decoded in batches of `--batch`, nothing else;
- re-extract: `pipeline.finetune.model.features_of` (the per-fold cache's path, torch, eval mode);
- extract (baseline): `pipeline.features.build_extractor(...)` on the same crops, the frozen cache's path
  (onnxruntime for retinaface_mnet on the CPU).
Each row: crops/s = crops processed / wall seconds, one warm-up pass first. Results:
bench/results/finetune_cpu.md (finetune_gpu.md with --gpu).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.config import ExtractConfig, FinetuneConfig
from pipeline.features import build_extractor
from pipeline.finetune.crops import CropPack, StreamedCrops, decode_jpeg, open_pack
from pipeline.finetune.model import features_of, trainable_extractor
from pipeline.finetune.train import FoldRun, train_fold

from _tables import publish  # beside this script


def _timed(fn) -> float:
    fn()  # warm-up (allocator, oneDNN primitives, cuDNN autotune)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def face_crops(videos: int, frames: int, size: int, seed: int = 0) -> torch.Tensor:
    """(videos, frames, 3, size, size) uint8 RGB: the shipped faces, each frame shifted by up to 1/8 side."""
    from pipeline.demo.assets import load_faces

    faces = [im for ims in load_faces().values() for im in ims]
    rng = np.random.default_rng(seed)
    pad = size // 8
    out = torch.empty((videos, frames, 3, size, size), dtype=torch.uint8)
    for i in range(videos):
        big = cv2.resize(faces[i % len(faces)], (size + pad, size + pad))[..., ::-1]
        for t in range(frames):
            y, x = rng.integers(0, pad + 1, 2)
            out[i, t] = torch.from_numpy(np.ascontiguousarray(big[y:y + size, x:x + size].transpose(2, 0, 1)))
    return out


def pack_of(crops: torch.Tensor, tmp: Path) -> CropPack:
    """The crops as extract stores them (JPEG q95, the real shard writer), packed by finetune's own code."""
    from cache.store import ShardRecord, write_shard

    t = crops.shape[1]
    records = [ShardRecord(f"v{i}", 0, f"s{i}", np.zeros((t, 1), np.float16), np.arange(t), np.ones(t, np.uint8),
                           np.zeros((t, 5, 2), np.float32),
                           [cv2.imencode(".jpg", c.permute(1, 2, 0).numpy()[..., ::-1],
                                         [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for c in video])
               for i, video in enumerate(crops)]
    features = tmp / f"pack-{crops.shape[-1]}" / "features"
    write_shard(features / "shard-00000.h5", records, {"class_names": ["x"]})
    pack, _ = open_pack(features, "bench", "finetune")
    return pack


def bench(backbone: str, size: int, args, tmp: Path) -> list[tuple[str, float]]:
    device = "cuda" if args.gpu else "cpu"
    e = ExtractConfig(backbone=backbone, weights="random", crop_size=size, device=device, threads=args.threads)
    ext = trainable_extractor(e)
    start = {k: v.clone() for k, v in ext.module.state_dict().items()}
    crops = face_crops(args.videos, args.frames, size)
    pack = pack_of(crops, tmp)
    kb = pack.data.size / crops.shape[0] / crops.shape[1] / 1024
    sizes = f"{backbone} {size} px: JPEG {kb:.1f} KB/crop, decoded {np.prod(crops.shape[2:]) / 1024:.0f} KB/crop"
    print(sizes)
    args.sizes_seen.append(sizes)
    streamed = StreamedCrops(pack)
    if args.gpu:
        crops = crops.cuda()
    labels = torch.arange(args.videos) % 6
    ids = [f"v{i}" for i in range(args.videos)]
    rows = []
    for name, layers, source in (("train (head only)", 0, crops), ("train (last 2 blocks)", 2, crops),
                                 ("train (last 2 blocks, streamed)", 2, streamed)):
        ft = FinetuneConfig(epochs=1, head_epochs=0, train_layers=layers, frames_per_video=args.frames,
                            batch_size=args.batch, device=device, threads=args.threads)

        def once():
            ext.module.load_state_dict(start)
            resume = tmp / f"{backbone}-{size}-{layers}.pt"
            resume.unlink(missing_ok=True)
            train_fold(ext, source, labels, ft, 6, FoldRun(0, ids, {}, "bench", resume))

        rows.append((name, args.videos * args.frames / _timed(once)))
    n = args.videos * args.frames
    v, t = torch.arange(n) // args.frames, torch.arange(n) % args.frames

    def decode_all():
        for s in range(0, n, args.batch):
            data = pack.jpegs(v[s:s + args.batch].numpy(), t[s:s + args.batch].numpy())
            decode_jpeg(data, device=device)

    rows.append(("decode (batched decode_jpeg)", n / _timed(decode_all)))
    flat = crops.reshape(-1, 3, size, size)
    rows.append(("re-extract", len(flat) / _timed(lambda: features_of(ext, flat, args.batch))))
    frozen = build_extractor(e)
    nhwc = flat.permute(0, 2, 3, 1).cpu().numpy()
    rows.append(("extract (baseline)", len(flat) / _timed(
        lambda: [frozen(nhwc[s:s + args.batch]) for s in range(0, len(nhwc), args.batch)])))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="retinaface_mnet,resnet18")
    ap.add_argument("--sizes", default="112,224", help="crop sides; resnet18 runs at 224 only unless given alone")
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--frames", type=int, default=8, help="frames per video (= frames_per_video drawn)")
    ap.add_argument("--batch", type=int, default=None, help="default 32 on the CPU, 256 with --gpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.batch = args.batch or (256 if args.gpu else 32)
    args.sizes_seen = []
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: torch sees no CUDA device")
    import tempfile

    load = os.getloadavg()[0]
    lines = ["| backbone | crop px | path | crops/s |", "|---|---|---|---|"]
    torch.set_num_threads(args.threads or os.cpu_count())
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones.split(","):
            for size in sizes if backbone == "retinaface_mnet" or len(sizes) == 1 else [224]:
                for name, rate in bench(backbone, size, args, Path(tmp)):
                    lines.append(f"| {backbone} | {size} | {name} | {rate:.0f} |")
                    print(lines[-1], flush=True)
    device = torch.cuda.get_device_name() if args.gpu else f"{os.cpu_count()} CPU cores"
    text = (f"# finetune throughput ({device}, torch {torch.__version__})\n\n"
            f"`python bench/bench_finetune.py{' --gpu' if args.gpu else ''}`: {args.videos} videos x {args.frames} "
            f"frames, batch {args.batch}, crops cut from the shipped faces (JPEG q95), random weights. Load average {load:.2f} at start, "
            f"{os.getloadavg()[0]:.2f} at end.\n\n" + "\n".join(lines) + "\n\n" + "; ".join(args.sizes_seen) + ".\n")
    publish(args.out or Path(__file__).parent / "results" / ("finetune_gpu.md" if args.gpu else "finetune_cpu.md"), text)


if __name__ == "__main__":
    main()
