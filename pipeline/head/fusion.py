"""Late fusion of the head with a linear probe (`train_head.fusion: probe`; a departure from the paper).

A video's class probabilities are a fixed mix, (1 - w) head + w probe (`train_head.fusion_weight`, 0.5: the mean), of
the head's and those of the linear probe that
`pipeline/head/sanity.py` reports beside every result: multinomial logistic regression on the head's
fitted input, mean-pooled over every cached frame and standardised, fitted on the training fold only.
The two fail differently: with few training people the head reads transient expressions better
(it scores clips and finds the emotion-rich one) and the probe held ones (a mean over all frames is
what a held expression needs); their mean has the best worst case across generated sources
(bench/results/robust.md), and held expressions alone are read best with more of the probe (the wild family's
weight, bench/results/fusion_weight.md). The activation maps stay the head's; the emotion-rich clip is read from the
map of the class the video is finally given (`rich_clips`), as eq. 6 reads it for the head's own prediction.

The fitted probe lives in torch buffers (`ProbeFusion`), so a fold checkpoint carries it and
`evaluate` and `predict` apply exactly what train-head scored.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.head.sanity import Probe

POOL_CHUNK = 256
"""Videos per forward through the input transform while pooling (bounds the float32 copy)."""


class ProbeFusion(nn.Module):
    """probs = softmax(((x - mean) / scale) @ weight.T + bias) for pooled inputs x (N, D)."""

    def __init__(self, in_dim: int, n_classes: int, share: float = 0.5):
        super().__init__()
        self.share = share  # the probe's share in `fuse` (train_head.fusion_weight; the checkpoint's config keeps it)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.register_buffer("weight", torch.zeros(n_classes, in_dim))
        self.register_buffer("bias", torch.zeros(n_classes))

    @classmethod
    def fit(cls, pooled: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0,
            C: float = 1.0, share: float = 0.5) -> "ProbeFusion":
        """The probe (`sanity.Probe`) fitted on (N, D) pooled training inputs, as buffers; `share`: its weight in `fuse`."""
        probe = Probe.fit(pooled, labels, n_classes, seed, C)
        out = cls(pooled.shape[1], n_classes, share)
        for name in ("mean", "scale", "weight", "bias"):
            getattr(out, name).copy_(torch.from_numpy(getattr(probe, name)))
        return out

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, C)
        with torch.autocast(pooled.device.type, enabled=False):  # float32 under bf16 autocast too: as fitted
            z = ((pooled.float() - self.mean) / self.scale) @ self.weight.T + self.bias
            return torch.softmax(z, dim=-1)


@torch.no_grad()
def pooled_input(model: nn.Module, features: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(N, D) the head's fitted input (`model.input`, no dropout) of cache rows, mean over every cached frame."""
    rows = torch.arange(len(features), device=features.device) if rows is None else rows
    parts = [model.input(features[rows[s:s + POOL_CHUNK]].float()).mean(dim=1)
             for s in range(0, len(rows), POOL_CHUNK)]
    return torch.cat(parts) if parts else features.new_zeros((0, features.shape[-1]), dtype=torch.float32)


def fuse(head_probs: torch.Tensor, probe_probs: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    """(1 - weight) head + weight probe: a fixed rule, never fitted to the folds it is scored on."""
    return (1.0 - weight) * head_probs.float() + weight * probe_probs.float()


def rich_clips(clip_scores: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """(N,) the emotion-rich clip of each video: the clip its predicted class's activation map (eq. 6) rates
    highest, for clip_scores (N, C, n_clips) and the class probabilities (N, C) it is finally given (the head's,
    averaged over test windows, or fused with the probe). The one rule train-head, evaluate and predict apply."""
    pred = probs.argmax(-1).to(clip_scores.device)
    return clip_scores.float().gather(1, pred[:, None, None].expand(-1, 1, clip_scores.shape[-1]))[:, 0].argmax(-1)
