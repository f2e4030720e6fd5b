"""CEFLNet head on cached per-frame features: clip-based feature encoder (CFE) + emotional
intensity activation network (EIAN). Liu et al., "Clip-aware expressive feature learning for
video-based facial expression recognition", Information Sciences 2022 (docs/reference.md §1).

Read top to bottom:
  SelfAttention      eq. 1     softmax(Q K^T / sqrt(d)) V over the K frames of one clip
  RelationPooling    eq. 2-3   w_k = sigmoid([mean(f') : f'_k] q0),  R = (sum w_k f'_k / sum w_k) q1
  EIAN               eq. 4-10  clips stacked (4), 1-D conv over clips -> per-class clip scores,
                               softmax over clips (5), P_e = argmax (6), M_c = A_c . V (7),
                               max-pool over clips (8), per-class FC -> logits (9); softmax (10)
                               and cross-entropy (11) live in the training loop.
  AuthorsCFE/AuthorsEIAN       the CVLab-Liuyuanyuan/CEFLNet code (models/Model.py), which differs.
  CEFLNet            forward_features -> forward_head -> forward (timm seams).

The input is `[B, n_clips, K, D]`: K cached frames per clip, D the backbone's feature width (512
for ResNet-18, 384 for the detector body). The backbone is frozen and lives upstream (the cache).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class HeadOutput:
    """What every head returns (CEFLNet and the ablation baselines alike)."""

    logits: torch.Tensor  # (B, C) pre-softmax class scores (eq. 9)
    clip_scores: torch.Tensor  # (B, C, n_clips) per-class attention over clips, sums to 1 over clips (eq. 5)
    rich_clip: torch.Tensor  # (B,) int64 index of the emotion-rich clip P_e (eq. 6)
    embedding: torch.Tensor  # (B, E) the video representation the classifier reads (t-SNE)


def check_input(x: torch.Tensor, in_dim: int) -> None:
    if x.ndim != 4 or x.shape[-1] != in_dim:
        raise ValueError(f"head input must be (B, n_clips, K, {in_dim}), got {tuple(x.shape)}")


# --------------------------------------------------------------------------- paper: CFE


class SelfAttention(nn.Module):
    """Eq. 1: frames of one clip attend to each other, softmax(Q K^T / sqrt(d)) V."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.qk = nn.Linear(in_dim, 2 * dim, bias=False)  # W_Q, W_K in one matmul
        self.v = nn.Linear(in_dim, dim, bias=False)  # W_V
        self.scale = 1.0 / math.sqrt(dim)

    def attention(self, f: torch.Tensor) -> torch.Tensor:  # (N, K, D) with N = B * n_clips
        q, k = self.qk(f).chunk(2, dim=-1)  # 2 x (N, K, H)
        return torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)  # (N, K, K)

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # (N, K, D)
        return self.attention(f) @ self.v(f)  # (N, K, H)


class RelationPooling(nn.Module):
    """Eq. 2-3: each frame's weight comes from itself next to the clip mean (local vs global);
    the clip feature is the weighted mean of the frames, projected by q1."""

    def __init__(self, dim: int):
        super().__init__()
        self.q0 = nn.Linear(2 * dim, 1)
        self.q1 = nn.Linear(dim, dim, bias=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # (N, K, H)
        g = f.mean(dim=1, keepdim=True).expand_as(f)  # (N, K, H) global clip context
        w = torch.sigmoid(self.q0(torch.cat([g, f], dim=-1)))  # (N, K, 1)   eq. 2
        pooled = (w * f).sum(dim=1) / w.sum(dim=1)  # (N, H)
        return self.q1(pooled)  # (N, H)   eq. 3


class CFE(nn.Module):
    """Clip-based feature encoder: SAL then LRL inside every clip, all clips in one batch."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.sal = SelfAttention(in_dim, dim)
        self.lrl = RelationPooling(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, K, D)
        """Equal to `self.lrl(self.sal(x))` in value and gradient (tests check both), computed in a cheaper
        order. Eq. 2-3 read the attended frames f' = A x W_V (A the eq. 1 attention) only through two
        projections, f' W_V q0 and the w-weighted mean of f', both linear in x. So f' is never built:
        the frame weights are A (x W_V q0) and the pooled clip feature is (c x) W_V with
        c = w^T A / sum(w), i.e. W_V and q1 touch one pooled row per clip instead of K attended frames.
        The only frame-sized matmul left is eq. 1's Q/K projection (the head is matmul-bound on CPU)."""
        b, n, k, d = x.shape
        x = x.reshape(b * n, k, d)  # (N, K, D) with N = B * n clips
        att = self.sal.attention(x)  # (N, K, K)   eq. 1's softmax(Q K^T / sqrt(d))
        # (W_V q0)^T for both halves of eq. 2's [mean(f') : f'_k] at once, as (2, H) @ (H, D): the
        # transposed (D, H) @ (H, 2) form of the same product was the slower one in torch.profiler.
        u = self.lrl.q0.weight.view(2, -1) @ self.sal.v.weight  # (2, D)
        fu = att @ F.linear(x, u)  # (N, K, 2): f'_k q0_global, f'_k q0_local
        logit = fu[..., 0].mean(dim=1, keepdim=True) + fu[..., 1] + self.lrl.q0.bias  # (N, K)   eq. 2
        w = torch.sigmoid(logit)  # (N, K)
        c = (w.unsqueeze(1) @ att).squeeze(1) / w.sum(dim=1, keepdim=True)  # (N, K): input frame j's share
        pooled = (c.unsqueeze(1) @ x).squeeze(1)  # (N, D); sum_k w_k f'_k / sum_k w_k = pooled W_V
        return self.lrl.q1(self.sal.v(pooled)).reshape(b, n, -1)  # (B, n, H)   eq. 3, eq. 4: V stacked


# --------------------------------------------------------------------------- paper: EIAN


class EIAN(nn.Module):
    """Emotional intensity activation network over the stacked clip features V (B, n, H)."""

    def __init__(self, dim: int, n_classes: int, kernel: int = 1, dropout: float = 0.4):
        super().__init__()
        # Scores every clip for every class. kernel 1 is the paper's "fully-connected layer" applied to
        # each clip (and the authors' Conv1d(kernel_size=1)); a wider odd kernel also sees the clip's
        # neighbours (zero padding at the ends), a departure measured in docs/head.md.
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"EIAN kernel must be odd and >= 1, got {kernel}")
        self.score = nn.Conv1d(dim, n_classes, kernel_size=kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)
        # Eq. 9: one linear read-out per class of that class's pooled activation map.
        self.fc_weight = nn.Parameter(torch.empty(n_classes, dim))
        self.fc_bias = nn.Parameter(torch.zeros(n_classes))
        nn.init.normal_(self.fc_weight, std=1.0 / math.sqrt(dim))

    def forward(self, v: torch.Tensor) -> HeadOutput:  # (B, n, H)
        a = torch.softmax(self.score(v.transpose(1, 2)), dim=-1)  # (B, C, n)   eq. 5
        m = a.unsqueeze(-1) * v.unsqueeze(1)  # (B, C, n, H)   eq. 7: M_c = A_c . V
        pooled = m.amax(dim=2)  # (B, C, H)   eq. 8: max over clips
        logits = (self.drop(pooled) * self.fc_weight).sum(-1) + self.fc_bias  # (B, C)   eq. 9
        pred = logits.argmax(dim=1)  # (B,)
        # Eq. 6 on the predicted class's map (the class-activation-map convention): P_e is the clip
        # that class attends to most. The argmax carries no gradient; the loss is video level (eq. 11).
        rich = a[torch.arange(len(a), device=a.device), pred].argmax(dim=-1)  # (B,)
        emb = pooled[torch.arange(len(a), device=a.device), pred]  # (B, H)
        return HeadOutput(logits, a, rich, emb)


# --------------------------------------------------------------------------- authors' code


class AuthorsCFE(nn.Module):
    """models/Model.py of CVLab-Liuyuanyuan/CEFLNet: 4-head nn.MultiheadAttention + residual +
    LayerNorm, max-pool over frames as the global feature, relation weight Linear(2H->1)+Sigmoid on
    [raw frame : global], weighted mean, fc 2H->H."""

    def __init__(self, in_dim: int, dim: int, heads: int = 4):
        super().__init__()
        # The authors' D equals H (512, ResNet-18); another backbone width needs a projection.
        self.proj = nn.Identity() if in_dim == dim else nn.Linear(in_dim, dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=0.1, batch_first=True)
        self.drop_attn = nn.Dropout(0.1)
        self.norm = nn.LayerNorm(dim)
        self.drop_beta = nn.Dropout(0.5)
        self.beta = nn.Sequential(nn.Linear(2 * dim, 1), nn.Sigmoid())
        self.fc = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, K, D)
        b, n, k, _ = x.shape
        f = self.proj(x.reshape(b * n, k, -1))  # (B*n, K, H)
        out, _ = self.attn(f, f, f, need_weights=False)  # (B*n, K, H)
        out = self.norm(f + self.drop_attn(out))  # (B*n, K, H)
        g = out.amax(dim=1, keepdim=True).expand_as(f)  # (B*n, K, H) global feature
        # As in the authors' code the *raw* frame features (not the attended ones) meet the global one.
        cat = torch.cat([f, g], dim=-1)  # (B*n, K, 2H)
        w = self.beta(self.drop_beta(cat))  # (B*n, K, 1)
        pooled = (cat * w).sum(dim=1) / w.sum(dim=1)  # (B*n, 2H)
        return self.fc(pooled).reshape(b, n, -1)  # (B, n, H)


class AuthorsEIAN(nn.Module):
    """Temporal_attn (Conv1d(H->1), softmax over clips) + max-pool + MLP classifier of the code."""

    def __init__(self, dim: int, n_classes: int, dropout: float = 0.4):
        super().__init__()
        self.attn = nn.Conv1d(dim, 1, kernel_size=1, bias=False)
        self.classifier = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(True), nn.Linear(256, 128), nn.ReLU(True),
                                        nn.Dropout(dropout), nn.Linear(128, n_classes))
        self.n_classes = n_classes

    def forward(self, v: torch.Tensor) -> HeadOutput:  # (B, n, H)
        a = torch.softmax(self.attn(v.transpose(1, 2)), dim=-1)  # (B, 1, n) one map shared by all classes
        pooled = (v * a.transpose(1, 2)).amax(dim=1)  # (B, H)
        logits = self.classifier(pooled)  # (B, C)
        scores = a.expand(-1, self.n_classes, -1)  # (B, C, n)
        return HeadOutput(logits, scores, a[:, 0].argmax(dim=-1), pooled)


# --------------------------------------------------------------------------- the model


class CEFLNet(nn.Module):
    """CFE inside each clip, then EIAN across clips; `variant` picks the paper's or the authors' form."""

    def __init__(self, in_dim: int, n_classes: int, *, hidden: int = 512, variant: str = "paper",
                 dropout: float = 0.4, clip_kernel: int = 1):
        super().__init__()
        if variant not in ("paper", "authors"):
            raise ValueError(f"variant must be paper or authors, got {variant!r}")
        self.in_dim, self.n_classes, self.variant = in_dim, n_classes, variant
        if variant == "paper":
            self.cfe, self.eian = CFE(in_dim, hidden), EIAN(hidden, n_classes, kernel=clip_kernel, dropout=dropout)
        else:
            self.cfe, self.eian = AuthorsCFE(in_dim, hidden), AuthorsEIAN(hidden, n_classes, dropout=dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, K, D) -> (B, n, H)
        check_input(x, self.in_dim)
        return self.cfe(x)

    def forward_head(self, v: torch.Tensor) -> HeadOutput:
        return self.eian(v)

    def forward(self, x: torch.Tensor) -> HeadOutput:
        return self.forward_head(self.forward_features(x))
