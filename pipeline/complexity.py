"""Parameters and MACs of ResNet-18 + the CEFLNet head per video, against the paper's Tables 8-9.

Counted with `torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2). What it counts: matrix
products and convolutions (conv, linear, bmm, attention); it does NOT count batch norm, ReLU, pooling,
softmax or additions, which profilers such as thop add (that is most of the ~0.5 % gap to the
paper's numbers). Per video = backbone on every sampled frame (7 clips x K frames, 224x224, without
ResNet's 1000-way fc) + the head once on `[1, 7, K, 512]`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline.head.model import CEFLNet

PAPER_GMACS = {2: 25.52, 5: 63.80, 10: 127.59, 15: 191.39}
"""Table 9: GMACs per video at K frames per clip (7 clips)."""
PAPER_PARAMS_M = 12.83
"""Table 8: ResNet-18 + head, millions of parameters."""


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def complexity_report(frames_per_clip: tuple[int, ...] = (2, 5, 10, 15), *, n_clips: int = 7, n_classes: int = 6,
                      hidden: int = 512) -> list[dict]:
    """One row per (K, head variant): params and GMACs, ours beside the paper's."""
    from torchvision.models import resnet18

    backbone = resnet18(weights=None).eval()  # random init: counting only
    backbone.fc = nn.Identity()  # the head replaces the classifier; features are the 512-d GAP
    frame_macs = count_macs(backbone, torch.zeros(1, 3, 224, 224))
    rows = []
    for variant in ("paper", "authors"):
        # train(): in eval mode nn.MultiheadAttention takes a fused fast path (_native_multi_head_attention)
        # that FlopCounterMode has no formula for, so the authors' attention would count as zero.
        head = CEFLNet(512, n_classes, hidden=hidden, variant=variant).train()
        for k in frames_per_clip:
            head_macs = count_macs(head, torch.zeros(1, n_clips, k, 512))
            total = frame_macs * n_clips * k + head_macs
            paper = PAPER_GMACS.get(k)
            rows.append({
                "variant": variant, "frames_per_clip": k, "frames_per_video": n_clips * k,
                "backbone_gmacs_per_frame": round(frame_macs / 1e9, 4), "head_gmacs": round(head_macs / 1e9, 4),
                "total_gmacs": round(total / 1e9, 2), "paper_gmacs": paper,
                "rel_diff_pct": round(100 * (total / 1e9 - paper) / paper, 2) if paper else None,
                "backbone_params_m": round(n_params(backbone) / 1e6, 3), "head_params_m": round(n_params(head) / 1e6, 3),
                "total_params_m": round((n_params(backbone) + n_params(head)) / 1e6, 2),
                "paper_params_m": PAPER_PARAMS_M,
            })
    return rows


def complexity_markdown(rows: list[dict]) -> str:
    lines = ["| head | frames/clip | frames/video | backbone GMACs/frame | head GMACs | total GMACs | paper GMACs | diff % "
             "| params M (backbone + head) | paper params M |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['frames_per_clip']} | {r['frames_per_video']} | "
                     f"{r['backbone_gmacs_per_frame']:.4f} | {r['head_gmacs']:.4f} | {r['total_gmacs']:.2f} | "
                     f"{r['paper_gmacs']} | {r['rel_diff_pct']:+.2f} | {r['backbone_params_m']:.2f} + "
                     f"{r['head_params_m']:.2f} = {r['total_params_m']:.2f} | {r['paper_params_m']} |")
    lines += ["", "Counted: conv/linear/attention matmuls of ResNet-18 (no fc) on 7 x K frames at 224x224 plus the "
              "head once (FlopCounterMode, MACs = FLOPs/2). Not counted: BN, ReLU, pooling, softmax."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(complexity_markdown(complexity_report()))
