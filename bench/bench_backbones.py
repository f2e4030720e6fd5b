"""Backbone throughput in extract's own network path: built-in backbones vs the timm / open_clip plug-ins.

    python bench/bench_backbones.py                       # CPU, the default model list, fp32
    python bench/bench_backbones.py --models resnet18 timm:convnext_tiny --batch 32 --min-seconds 10
    python bench/bench_backbones.py --device cuda --batch 256   # bf16 autocast (extract.precision auto)

What is timed: `pipeline.features.build_extractor(ExtractConfig(...))` then `extractor(crops)` on
batches of random uint8 crops at each model's own crop size (224 for all defaults): the exact call
`stages.extract` makes per batch — uint8 → float, the model's normalisation, channels_last, autocast
when the precision asks for it, the network, copy back. Decoding, alignment and writing are not
included (they do not depend on the backbone: bench_extract.py measures them). One warm-up batch,
then `--rounds` rounds that interleave the models, each model running batches until
`--min-seconds` have passed (at least one batch) per round; frames/s = all its frames / all its
seconds.

Weights: **random initialisation** for every model (`extract.weights: random`): throughput does not
depend on the values, and no checkpoint has to be on the machine. The baseline is ResNet-18 measured
in the same run; compare ratios, not absolute frames/s, on a shared machine.
Results: bench/results/backbones_cpu.md (backbones_gpu.md on CUDA).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_detect import machine_info, machine_lines  # noqa: E402
from _tables import publish  # noqa: E402

# (backbone, role): the baseline and the detector body, then a small and a large model of each plug-in
DEFAULT_MODELS = [
    ("resnet18", "baseline (the paper's)"),
    ("retinaface_mnet", "built-in, offline"),
    ("timm:efficientnet_b0", "timm small (HSEmotion's architecture family)"),
    ("timm:vit_base_patch16_224", "timm large"),
    ("open_clip:ViT-B-16", "CLIP small"),
    ("open_clip:ViT-L-14", "CLIP large (A³lign-DFER's encoder)"),
]


def build(backbone: str, device: str, precision: str, batch: int) -> dict:
    """The extractor, built and warmed up on one batch (oneDNN / cuDNN pick their kernels)."""
    import torch

    from pipeline.config import ExtractConfig
    from pipeline.features import build_extractor

    t0 = time.perf_counter()
    ex = build_extractor(ExtractConfig(backbone=backbone, weights="random", device=device, precision=precision))
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in ex.module.parameters()) if isinstance(ex.module, torch.nn.Module) else 0
    crops = np.random.default_rng(0).integers(0, 256, (batch, ex.crop_size, ex.crop_size, 3), dtype=np.uint8)
    dim = ex(crops).shape[1]
    return {"backbone": backbone, "ex": ex, "crops": crops, "dim": dim, "params_m": params / 1e6,
            "crop": ex.crop_size, "precision": ex.provenance()["precision"], "frames": 0, "seconds": 0.0,
            "build_s": build_s}


def run_round(r: dict, min_seconds: float) -> None:
    """Batches until `min_seconds` have passed (at least one); adds to the model's frames and seconds."""
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < min_seconds:
        r["ex"](r["crops"])  # returns numpy: the device work is finished when it returns
        n += len(r["crops"])
    r["frames"] += n
    r["seconds"] += time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="extract.backbone values (default: the list in the docstring)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="auto", help="extract.precision (auto: fp32 on CPU, bf16 on CUDA)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--min-seconds", type=float, default=5.0, help="per model and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # `random` weights warn on purpose; the table says so
    models = [(m, "") for m in args.models] if args.models else DEFAULT_MODELS
    info = machine_info()
    rows = []
    for backbone, role in models:
        rows.append({**build(backbone, args.device, args.precision, args.batch), "role": role})
    # Rounds interleave the models, so a change in the machine's load hits all of them alike.
    for k in range(args.rounds):
        for r in rows:
            run_round(r, args.min_seconds)
            print(f"round {k}: {r['backbone']}: {r['frames']} frames in {r['seconds']:.1f} s", flush=True)
    for r in rows:
        r["fps"] = r["frames"] / r["seconds"]
    base = next((r["fps"] for r in rows if r["backbone"] == "resnet18"), rows[0]["fps"])
    lines = [f"# Backbone throughput in extract's network path, {args.device}", "",
             f"`python bench/bench_backbones.py {' '.join(sys.argv[1:])}`".replace(" `", "`"), "",
             "Random-initialised weights for every model (speed does not depend on the values). Network path "
             "only: uint8 crops → normalisation → channels_last → model → features, as `stages.extract` calls "
             "it; decode and alignment excluded. Rounds interleave the models. Ratio: frames/s over ResNet-18's, "
             "measured in the same run.", "",
             "| backbone | role | feature dim | params (M) | crop px | precision | batch | frames | seconds | "
             "frames/s | ratio to resnet18 | build s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = f"{r['params_m']:.1f}" if r["params_m"] else "(onnx graph)"
        lines.append(f"| `{r['backbone']}` | {r['role']} | {r['dim']} | {params} | {r['crop']} | "
                     f"{r['precision']} | {args.batch} | {r['frames']} | {r['seconds']:.2f} | {r['fps']:.1f} | "
                     f"{r['fps'] / base:.2f}x | {r['build_s']:.1f} |")
    lines += ["", "Machine:", *machine_lines(info), ""]
    text = "\n".join(lines)
    publish(args.out or REPO / "bench" / "results" / f"backbones_{'gpu' if args.device == 'cuda' else 'cpu'}.md", text)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
