"""The head's input: frozen per-frame features made robust to who is in the video.

A frozen backbone's per-frame features are dominated by identity, lighting and pose; the
expression is a small change on top (measured in bench/results/center.md: the raw features score
near chance on people the head has never seen). `train_head.center` chooses how the head's input is
built from a video's cached frames `x` (T, D); every option uses the video itself and, for the fitted
parts, the training fold only — never test-fold labels or statistics:

  none          x                               the paper (its backbone is fine-tuned, ours is frozen)
  video_median  x - median_t(x)                 removes everything constant in the video (identity,
                                                lighting, and a held expression too)
  first_frames  x - mean(x[:k])                 the first 10 % of frames as the neutral reference
                                                (lab clips start neutral; wild clips often do not)
  two_stream    [x - median_t(x) : P(x - mu)]   the part that changes and the part that is held;
                                                mu is the training fold's mean frame and P projects
                                                out the `identity_rank` directions along which the
                                                training subjects' mean frames differ most (nuisance
                                                attribute projection, as in speaker verification)
  two_stream_first [x - mean(x[:k]) : P(x - mu)]  as two_stream, the changing stream taken against the
                                                first frames: a transient expression stands out
                                                against its neutral onset, and a held one, which
                                                the centred stream cancels, is still in the raw one
  two_stream_held [x - mean(x[:k]) : P(median_t(x) - mu)]  as two_stream_first, the raw stream replaced by
                                                the video's median frame on every frame: the level the
                                                video holds most of the time, so a passing occluder,
                                                speech or a blink does not move it

`train_head.subject_norm` first subtracts each person's mean frame over all of that person's videos
(`person_offsets`): person-specific normalisation (OpenFace's for action units). It uses no labels and
each person's own videos only, so it is the same whichever fold the person is in; a person with fewer
videos than there are classes is left as is (their mean would also hold their expressions).

The per-video part runs on the cached frames before clip sampling (`head_input`); the fitted part is
`InputTransform`, the first module of every head, whose buffers are fitted once per fold on the
training rows and saved in the fold's checkpoint, so `predict` and `evaluate` apply the same input.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from pipeline.config import CENTERS
FIRST_FRAMES_SHARE = 0.1
REFERENCE = {"video_median": "median", "first_frames": "first", "two_stream": "median", "two_stream_first": "first",
             "two_stream_held": "first"}
"""What each option's changing stream is taken against: the video's median frame or its first frames (`none`
has no changing stream)."""
RAW = {"two_stream": "frames", "two_stream_first": "frames", "two_stream_held": "median"}
"""The two-stream options' raw stream beside the changing one: every frame as it is, or the video's median frame."""


def input_dim(center: str, feature_dim: int) -> int:
    """Width of the head's input for a backbone of width `feature_dim`."""
    return 2 * feature_dim if is_two_stream(center) else feature_dim


def is_two_stream(center: str) -> bool:
    return center in RAW


def normalised_people(subjects: Sequence[str], min_videos: int) -> list[str]:
    """The people `person_offsets` normalises: those with at least `min_videos` videos."""
    ids, counts = np.unique(np.asarray(subjects), return_counts=True)
    return [str(s) for s, n in zip(ids, counts) if n >= min_videos]


def person_offsets(features: np.ndarray, subjects: Sequence[str], min_videos: int,
                   present: np.ndarray | None = None) -> np.ndarray:
    """(N, T, D) cached features -> (N, D) each video's person's mean frame over all of that person's videos;
    zeros for people with fewer than `min_videos` videos (left as they are). `present`: (N,) rows that hold
    features (a per-fold cache leaves the videos finetune dropped as zero rows, which must not count)."""
    subjects = np.asarray(subjects).astype(str)
    present = np.ones(len(subjects), bool) if present is None else np.asarray(present, bool)
    out = np.zeros((features.shape[0], features.shape[-1]), np.float32)
    for s in normalised_people(subjects[present], min_videos):
        rows = np.flatnonzero((subjects == s) & present)
        out[subjects == s] = features[rows].astype(np.float32).mean(axis=(0, 1))
    return out


def head_input(features: np.ndarray, cfg, subjects: Sequence[str], n_classes: int,
               present: np.ndarray | None = None) -> np.ndarray:
    """The per-video part of the head's input for a `train_head` config `cfg` (its `center` and
    `subject_norm`): the one entry train-head, evaluate and the per-fold caches use. The offsets are only
    taken where they matter: `first_frames` and `video_median` keep no level (a person's offset cancels in
    the video's own reference), and where nobody qualifies they are all zero."""
    offset = None
    if getattr(cfg, "subject_norm", False) and (cfg.center == "none" or is_two_stream(cfg.center)):
        offset = person_offsets(features, subjects, n_classes, present)
        offset = offset if offset.any() else None
    return per_video(features, cfg.center, offset)


def per_video(features: np.ndarray, center: str, offset: np.ndarray | None = None) -> np.ndarray:
    """(N, T, D) or (T, D) cached features -> the per-video part of the head's input (same dtype), after
    subtracting `offset` ((N, D) or (D,): `person_offsets`) from every frame.

    For the two-stream options the raw half is passed through; `InputTransform` centres and projects it."""
    if center not in CENTERS:
        raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
    if offset is not None:
        features = (features.astype(np.float32) - offset[..., None, :]).astype(features.dtype)
    if center == "none":
        return features
    x = features.astype(np.float32)
    median = np.median(x, axis=-2, keepdims=True) if "median" in (REFERENCE[center], RAW.get(center)) else None
    if REFERENCE[center] == "first":
        changing = x - x[..., :max(1, round(FIRST_FRAMES_SHARE * x.shape[-2])), :].mean(axis=-2, keepdims=True)
    else:
        changing = x - median
    if not is_two_stream(center):
        return changing.astype(features.dtype)
    raw = x if RAW[center] == "frames" else np.broadcast_to(median, x.shape)
    return np.concatenate([changing, raw], axis=-1).astype(features.dtype)


class InputTransform(nn.Module):
    """The fitted part of the input: for the two-stream options, the raw half minus the training mean frame,
    with the `rank` identity directions projected out. Identity for every other option."""

    def __init__(self, in_dim: int, center: str = "none", rank: int = 0, raw_dropout: float = 0.0,
                 standardize: bool = False):
        super().__init__()
        self.center = center
        self.raw_dropout = raw_dropout
        self.raw = in_dim // 2 if is_two_stream(center) else 0  # width of the raw half (the last dims)
        self.register_buffer("mean", torch.zeros(self.raw))
        self.register_buffer("basis", torch.zeros(min(rank, self.raw), self.raw))  # (r, D) orthonormal rows
        if standardize:  # only then: checkpoints of heads without it keep loading
            self.register_buffer("scale", torch.ones(in_dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, subjects: np.ndarray, labels: np.ndarray | None = None) -> None:
        """x: (N, T, in_dim) training videos (per_video applied); subjects, labels: (N,) their subject ids and
        classes (training rows only)."""
        self._fit_centring(x, subjects, labels)
        if hasattr(self, "scale"):
            self._fit_scale(x)

    def _fit_scale(self, x: torch.Tensor, chunk: int = 256) -> None:
        """1 / the per-dimension std of the transformed training frames: every input dimension starts on one
        scale, so a block of large values (optical flow in pixels beside a backbone's activations) does not
        drown the rest. Summed in chunks of videos: a large training fold is never copied whole in float32."""
        self.scale.fill_(1.0)
        n, total, sq = 0, 0.0, 0.0
        for i in range(0, x.shape[0], chunk):
            y = self._centred(x[i:i + chunk].float()).reshape(-1, x.shape[-1]).double()
            n, total, sq = n + y.shape[0], total + y.sum(0), sq + (y * y).sum(0)
        var = (sq / n - (total / n) ** 2).clamp_min(0.0)
        self.scale.copy_((1.0 / var.sqrt().clamp_min(1e-6)).float())

    def _fit_centring(self, x: torch.Tensor, subjects: np.ndarray, labels: np.ndarray | None) -> None:
        if not self.raw:
            return
        raw = x[..., -self.raw:].float().mean(dim=1)  # (N, D) each video's mean frame
        self.mean.copy_(raw.mean(dim=0))
        r = self.basis.shape[0]
        if r == 0:
            return
        spread = float((raw - raw.mean(dim=0)).norm()) / max(1, raw.shape[0]) ** 0.5  # a video's typical distance
        if labels is not None:
            # Subject means of what the class does not explain: with unbalanced classes per subject (the
            # wild datasets) a subject's plain mean frame also points along its most frequent expression,
            # and projecting that out would remove the held expression the raw stream is there to keep.
            labels = np.asarray(labels)
            for c in np.unique(labels):
                rows = torch.as_tensor(labels == c)
                raw[rows] = raw[rows] - raw[rows].mean(dim=0)
        ids = np.unique(subjects)
        means = torch.stack([raw[torch.as_tensor(subjects == s)].mean(dim=0) for s in ids])  # (S, D)
        means = means - means.mean(dim=0)
        _, sv, vt = torch.linalg.svd(means, full_matrices=False)  # rows: directions of identity variance
        # Only directions the subject means really spread along: after `subject_norm` they coincide up to
        # float16 rounding (singular values ~1e-4 of a video's spread), and the SVD of that noise would name
        # arbitrary directions to remove.
        real = int((sv > 1e-2 * spread).sum())
        k = min(r, len(ids) - 1, vt.shape[0], real)  # S subject means span at most S - 1 directions
        self.basis.zero_()
        self.basis[:k] = vt[:k]

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        """The raw half minus the training mean, identity directions projected out (no scale, no dropout)."""
        if not self.raw:
            return x
        changing, raw = x[..., :-self.raw], x[..., -self.raw:] - self.mean
        raw = raw - (raw @ self.basis.T) @ self.basis  # project out the identity directions
        return torch.cat([changing, raw], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in_dim)
        x = self._centred(x)
        if self.raw and self.raw_dropout and self.training and torch.is_grad_enabled():
            # Whole-video stream dropout while training: the head must also classify from the changing
            # stream alone, so it cannot lean on the identity left in the raw one (never at test time).
            keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= self.raw_dropout
            x = torch.cat([x[..., :-self.raw], x[..., -self.raw:] * keep], dim=-1)
        return x * self.scale if hasattr(self, "scale") else x
