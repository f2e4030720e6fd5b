"""Ablation heads (the rows of the paper's Table 6) and `build_head`, the one factory from config.

All heads take `[B, n_clips, K, D]` and return `HeadOutput`, so training, evaluation and the clip
maps work unchanged. Heads without EIAN score clips with their own classifier applied per clip and
average the clip logits into the video logits (for a linear classifier that *is* the classifier of
the mean-pooled video), so they still have a clip map and an emotion-rich clip to compare.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.head.inputs import InputTransform
from pipeline.head.model import CFE, CEFLNet, HeadOutput, SelfAttention, check_input

KINDS = ("meanpool", "lstm", "sal", "sal_lrl", "ceflnet")
"""Ablation order: ResNet-18 (mean-pool + linear), CNN-LSTM, +SAL, +SAL+LRL (no EIAN), full CEFLNet."""


class ClipMeanClassifier(nn.Module):
    """Linear classifier per clip; the video logits are the mean of the clip logits."""

    def __init__(self, dim: int, n_classes: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, v: torch.Tensor) -> HeadOutput:  # (B, n, E)
        clip_logits = self.fc(self.drop(v))  # (B, n, C)
        logits = clip_logits.mean(dim=1)  # (B, C)
        scores = torch.softmax(clip_logits.transpose(1, 2), dim=-1)  # (B, C, n)
        pred = logits.argmax(dim=1)
        rich = scores[torch.arange(len(v), device=v.device), pred].argmax(dim=-1)  # (B,)
        return HeadOutput(logits, scores, rich, v.mean(dim=1))


class MeanPoolHead(nn.Module):
    """The paper's ResNet-18 baseline: frame features averaged, one linear layer."""

    def __init__(self, in_dim: int, n_classes: int, *, dropout: float = 0.4):
        super().__init__()
        self.in_dim = in_dim
        self.head = ClipMeanClassifier(in_dim, n_classes, dropout)

    def forward(self, x: torch.Tensor) -> HeadOutput:  # (B, n, K, D)
        check_input(x, self.in_dim)
        return self.head(x.mean(dim=2))  # (B, n, D)


class LSTMHead(nn.Module):
    """CNN-LSTM: one LSTM over the 35 sampled frames in time order, classified from its last state."""

    def __init__(self, in_dim: int, n_classes: int, *, hidden: int = 512, dropout: float = 0.4):
        super().__init__()
        self.in_dim = in_dim
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> HeadOutput:  # (B, n, K, D)
        check_input(x, self.in_dim)
        b, n, k, d = x.shape
        h, _ = self.lstm(x.reshape(b, n * k, d))  # (B, n*K, H)
        logits = self.fc(self.drop(h[:, -1]))  # (B, C)
        clip_logits = self.fc(h.reshape(b, n, k, -1).mean(dim=2))  # (B, n, C) read-out of each clip's states
        scores = torch.softmax(clip_logits.transpose(1, 2), dim=-1)  # (B, C, n)
        rich = scores[torch.arange(b, device=x.device), logits.argmax(dim=1)].argmax(dim=-1)
        return HeadOutput(logits, scores, rich, h[:, -1])


class SALHead(nn.Module):
    """+SAL: self-attention inside each clip (eq. 1), frames averaged, clips averaged."""

    def __init__(self, in_dim: int, n_classes: int, *, hidden: int = 512, dropout: float = 0.4):
        super().__init__()
        self.in_dim = in_dim
        self.sal = SelfAttention(in_dim, hidden)
        self.head = ClipMeanClassifier(hidden, n_classes, dropout)

    def forward(self, x: torch.Tensor) -> HeadOutput:  # (B, n, K, D)
        check_input(x, self.in_dim)
        b, n, k, d = x.shape
        f = self.sal(x.reshape(b * n, k, d))  # (B*n, K, H)
        return self.head(f.mean(dim=1).reshape(b, n, -1))  # (B, n, H)


class SALLRLHead(nn.Module):
    """+SAL+LRL: the full clip encoder (eq. 1-4), clips averaged instead of EIAN."""

    def __init__(self, in_dim: int, n_classes: int, *, hidden: int = 512, dropout: float = 0.4):
        super().__init__()
        self.in_dim = in_dim
        self.cfe = CFE(in_dim, hidden)
        self.head = ClipMeanClassifier(hidden, n_classes, dropout)

    def forward(self, x: torch.Tensor) -> HeadOutput:  # (B, n, K, D)
        check_input(x, self.in_dim)
        return self.head(self.cfe(x))  # (B, n, H)


class WithInput(nn.Module):
    """A head behind its fitted input transform (pipeline/head/inputs.py); same HeadOutput."""

    def __init__(self, transform: InputTransform, head: nn.Module):
        super().__init__()
        self.input, self.head = transform, head

    def forward(self, x: torch.Tensor) -> HeadOutput:  # (B, n, K, in_dim)
        return self.head(self.input(x))


def build_head(cfg, in_dim: int, n_classes: int, kind: str = "ceflnet") -> nn.Module:
    """Map `train_head` config (a TrainHeadConfig) to a head's explicit constructor arguments.

    `in_dim` is the width of the per-video input (`inputs.per_video`), twice the backbone's for two_stream."""
    return WithInput(InputTransform(in_dim, cfg.center, cfg.identity_rank, cfg.raw_dropout,
                                    getattr(cfg, "standardize", False)), _build(cfg, in_dim, n_classes, kind))


def _build(cfg, in_dim: int, n_classes: int, kind: str) -> nn.Module:
    if kind == "ceflnet":
        return CEFLNet(in_dim, n_classes, hidden=cfg.hidden, variant=cfg.variant, dropout=cfg.dropout,
                       clip_kernel=cfg.clip_kernel)
    if kind == "meanpool":
        return MeanPoolHead(in_dim, n_classes, dropout=cfg.dropout)
    builders = {"lstm": LSTMHead, "sal": SALHead, "sal_lrl": SALLRLHead}
    if kind not in builders:
        raise ValueError(f"head kind must be one of {KINDS}, got {kind!r}")
    return builders[kind](in_dim, n_classes, hidden=cfg.hidden, dropout=cfg.dropout)
