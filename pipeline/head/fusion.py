"""Late fusion of the head with a linear probe (`train_head.fusion: probe`; a departure from the paper).

A video's class probabilities are a fixed mix, (1 - w) head + w probe (`train_head.fusion_weight`, 0.5: the mean), of
the head's and those of the linear probe that
`pipeline/head/sanity.py` reports beside every result: multinomial logistic regression on the head's
fitted input, mean-pooled over every cached frame and standardised, fitted on the training fold only.
The two fail differently: with few training people the head reads transient expressions better
(it scores clips and finds the emotion-rich one) and the probe held ones (a mean over all frames is
what a held expression needs); their mean has the best worst case across generated sources
(bench/results/robust.md), and held expressions alone are read best with more of the probe (the wild family's
weight, bench/results/fusion_weight.md). The emotion-rich clip is read from the map of the class the video is finally
given (`rich_clips`), as eq. 6 reads it for the head's own prediction; which map (`train_head.rich_clip`): the head's
activation map (the paper), or where in the video the probe finds that class (`probe_clip_map`: the probe on each test
clip's pooled input). On the transient sources measured the probe's map finds the apex 8-18 points more often on
every `au` column with 6 training people, where the head's falls below a centre-clip guess (+0.9 with 15), and within
two videos of it or better on the `tps` ones (bench/results/rich_clip.md). A departure from the paper (docs/head.md).

The fitted probe lives in torch buffers (`ProbeFusion`), so a fold checkpoint carries it and
`evaluate` and `predict` apply exactly what train-head scored.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from pipeline.head.sanity import Probe

POOL_CHUNK = 256
"""Videos per forward through the input transform while pooling (bounds the float32 copy)."""


class ProbeFusion(nn.Module):
    """probs = softmax(((x - mean) / scale) @ weight.T + bias) for pooled inputs x (N, D)."""

    def __init__(self, in_dim: int, n_classes: int, share: float = 0.5, locates: bool = False):
        super().__init__()
        self.share = share  # the probe's share in `fuse` (train_head.fusion_weight; the checkpoint's config keeps it)
        self.locates = locates  # its map picks the emotion-rich clip (train_head.rich_clip: probe; the config keeps it)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.register_buffer("weight", torch.zeros(n_classes, in_dim))
        self.register_buffer("bias", torch.zeros(n_classes))

    @classmethod
    def fit(cls, pooled: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0,
            C: float = 1.0, share: float = 0.5, locates: bool = False) -> "ProbeFusion":
        """The probe (`sanity.Probe`) fitted on (N, D) pooled training inputs, as buffers; `share`: its weight in `fuse`;
        `locates`: its map picks the emotion-rich clip (`rich_clip_map`)."""
        probe = Probe.fit(pooled, labels, n_classes, seed, C)
        out = cls(pooled.shape[1], n_classes, share, locates)
        for name in ("mean", "scale", "weight", "bias"):
            getattr(out, name).copy_(torch.from_numpy(getattr(probe, name)))
        return out

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., C)
        with torch.autocast(pooled.device.type, enabled=False):  # float32 under bf16 autocast too: as fitted
            return ((pooled.float() - self.mean) / self.scale) @ self.weight.T + self.bias

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, C)
        return torch.softmax(self.logits(pooled), dim=-1)


@torch.no_grad()
def pooled_input(model: nn.Module, features: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(N, D) the head's fitted input (`model.input`, no dropout) of cache rows, mean over every cached frame."""
    rows = torch.arange(len(features), device=features.device) if rows is None else rows
    return clip_pooled_input(model, features, rows, [0], features.shape[1])[:, 0]  # one clip: every frame


@torch.no_grad()
def clip_pooled_input(model: nn.Module, features: torch.Tensor, rows: torch.Tensor, starts: Sequence[int],
                      length: int) -> torch.Tensor:
    """(N, n_clips, D) the head's fitted input (`model.input`, no dropout) of cache rows, mean over each clip's
    frames [start, start + length): every frame of the clip, not only the ones the head samples from it."""
    parts = []
    for s in range(0, len(rows), POOL_CHUNK):
        x = model.input(features[rows[s:s + POOL_CHUNK]].float())  # (b, T, D)
        parts.append(torch.stack([x[:, a:a + length].mean(dim=1) for a in starts], dim=1))
    return torch.cat(parts) if parts else features.new_zeros((0, len(starts), features.shape[-1]), dtype=torch.float32)


def probe_clip_map(model: nn.Module, fusion: ProbeFusion, features: torch.Tensor, rows: torch.Tensor,
                   sampler) -> torch.Tensor:
    """(N, C, n_clips) where in each video the probe finds each class: for every class, the softmax over the test
    window's clips (`sampler`: a ClipSampler) of the probe's logit on each clip's pooled input, on the scale of
    eq. 5's activation map. A linear probe fitted on whole-video means scores a clip by how much of the class's
    evidence it holds, so the clip nearest the apex scores highest."""
    starts = [int(s) for s in sampler.clip_span(torch.arange(sampler.n_clips))[0]]
    z = fusion.logits(clip_pooled_input(model, features, rows, starts, sampler.clip_len).to(fusion.mean.device))
    return torch.softmax(z.transpose(1, 2), dim=-1)


def rich_clip_map(model: nn.Module, fusion: ProbeFusion | None, clip_scores: torch.Tensor, features: torch.Tensor,
                  rows: torch.Tensor, sampler) -> torch.Tensor:
    """(N, C, n_clips) the map the emotion-rich clip is read from (`train_head.rich_clip`): the probe's
    (`probe_clip_map`) when the head is fused with a probe that locates, else the head's own `clip_scores`."""
    if fusion is None or not fusion.locates:
        return clip_scores.float()
    return probe_clip_map(model, fusion, features, rows.to(features.device), sampler).to(clip_scores.device)  # (N, C, n)


def fuse(head_probs: torch.Tensor, probe_probs: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    """(1 - weight) head + weight probe: a fixed rule, never fitted to the folds it is scored on."""
    return (1.0 - weight) * head_probs.float() + weight * probe_probs.float()


def rich_clips(maps: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """(N,) the emotion-rich clip of each video: the clip its predicted class's map (eq. 6) rates highest, for maps
    (N, C, n_clips) (the head's activation map or `rich_clip_map`'s) and the class probabilities (N, C) it is finally
    given (the head's, averaged over test windows, or fused with the probe). The one rule train-head, evaluate and
    predict apply."""
    pred = probs.argmax(-1).to(maps.device)
    return maps.float().gather(1, pred[:, None, None].expand(-1, 1, maps.shape[-1]))[:, 0].argmax(-1)
