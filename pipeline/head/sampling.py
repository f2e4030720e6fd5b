"""Which cached frames reach the head: 7 clips x 5 frames out of a 75-frame window of the 105.

From the paper and the authors' `data/NewDataset.py` (docs/reference.md §1): the window starts at a random
offset in 0..29 in training and at 15 at test; clip c covers window frames [10c, 10c + 15); training
draws 5 distinct frames per clip at random (kept in time order), test takes offsets 0,3,6,9,12.
Indices come out as one tensor for the whole batch, on the features' device, so a batch is one
gather `features[video[:, None, None], index]` with no per-sample Python.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ClipSampler:
    n_frames: int
    """Frames per cached video (105); every index must stay below it."""
    n_clips: int = 7
    clip_len: int = 15
    clip_stride: int = 10
    frames_per_clip: int = 5
    train_offset_max: int = 29
    test_offset: int = 15
    test_frame_offsets: tuple[int, ...] = (0, 3, 6, 9, 12)

    def __post_init__(self) -> None:
        last = max(self.train_offset_max, self.test_offset) + (self.n_clips - 1) * self.clip_stride + self.clip_len
        if last > self.n_frames:
            raise ValueError(f"clips reach frame {last - 1} but the cache holds {self.n_frames} frames per video "
                             "(lower train_head.train_offset_max/test_offset or n_clips)")
        if self.frames_per_clip > self.clip_len:
            raise ValueError(f"frames_per_clip {self.frames_per_clip} > clip_len {self.clip_len}")

    @classmethod
    def from_config(cls, cfg, n_frames: int) -> "ClipSampler":
        """From a TrainHeadConfig."""
        return cls(n_frames, cfg.n_clips, cfg.clip_len, cfg.clip_stride, cfg.frames_per_clip,
                   cfg.train_offset_max, cfg.test_offset, tuple(cfg.test_frame_offsets))

    def clip_starts(self, device: torch.device | str = "cpu") -> torch.Tensor:  # (n,)
        return torch.arange(self.n_clips, device=device) * self.clip_stride

    def train_indices(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B, n, K) random frame indices: random window offset per video, K distinct sorted frames per clip."""
        dev = generator.device
        offset = torch.randint(0, self.train_offset_max + 1, (batch, 1, 1), generator=generator, device=dev)
        noise = torch.rand(batch, self.n_clips, self.clip_len, generator=generator, device=dev)
        # The K smallest of clip_len uniform keys: a uniform draw without replacement, then time order.
        within = noise.argsort(dim=-1)[..., : self.frames_per_clip].sort(dim=-1).values  # (B, n, K)
        return offset + self.clip_starts(dev).view(1, -1, 1) + within  # (B, n, K)

    def test_indices(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(n, K) fixed indices, the same for every video (broadcast over the batch)."""
        within = torch.tensor(self.test_frame_offsets, device=device).view(1, -1)  # (1, K)
        return self.test_offset + self.clip_starts(device).view(-1, 1) + within  # (n, K)

    def clip_span(self, clip: torch.Tensor, train_offset: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """First and last cached frame covered by clip index `clip` at test time (inclusive)."""
        start = (self.test_offset if train_offset is None else train_offset) + clip * self.clip_stride
        return start, start + self.clip_len - 1
