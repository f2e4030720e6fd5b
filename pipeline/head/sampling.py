"""Which cached frames reach the head: 7 clips x 5 frames out of a 75-frame window of the 105.

From the paper and the authors' `data/NewDataset.py` (docs/reference.md §1): the window starts at a random
offset in 0..29 in training and at 15 at test; clip c covers window frames [10c, 10c + 15); training
draws 5 distinct frames per clip at random (kept in time order), test takes offsets 0,3,6,9,12.
`train_head.test_windows: all` averages the test prediction over every window start training draws from.
Indices come out as one tensor for the whole batch, on the features' device, so a batch is one
gather `features[video[:, None, None], index]` with no per-sample Python.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from pipeline.config import TrainHeadConfig


@dataclass(frozen=True)
class ClipSampler:
    """Built from the config alone (`from_config`): its fields are train_head's keys of the same name, whose
    defaults (pipeline/schema.py) are the paper's; none is repeated here."""

    n_frames: int
    """Frames per cached video (105); every index must stay below it."""
    n_clips: int
    clip_len: int
    clip_stride: int
    frames_per_clip: int
    train_offset_max: int
    test_offset: int
    test_frame_offsets: tuple[int, ...]
    test_windows: str

    @classmethod
    def from_config(cls, cfg: TrainHeadConfig, n_frames: int) -> ClipSampler:
        if cfg.frames_needed > n_frames:
            raise ValueError(f"clips reach frame {cfg.frames_needed - 1} but the cache holds {n_frames} frames per "
                             "video (lower train_head.train_offset_max/test_offset or n_clips)")
        if cfg.frames_per_clip > cfg.clip_len:
            raise ValueError(f"frames_per_clip {cfg.frames_per_clip} > clip_len {cfg.clip_len}")
        keys = {f.name: getattr(cfg, f.name) for f in fields(cls) if f.name != "n_frames"}
        return cls(n_frames=n_frames, **keys | {"test_frame_offsets": tuple(cfg.test_frame_offsets)})

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

    def test_indices(self, device: torch.device | str = "cpu", offset: int | None = None) -> torch.Tensor:
        """(n, K) fixed indices of the window at `offset` (default `test_offset`), the same for every video."""
        within = torch.tensor(self.test_frame_offsets, device=device).view(1, -1)  # (1, K)
        start = self.test_offset if offset is None else offset
        return start + self.clip_starts(device).view(-1, 1) + within  # (n, K)

    def window_offsets(self) -> list[int]:
        """The window starts a test prediction averages, `test_offset` first (its clip outputs are kept): that
        one alone (`fixed`), or every start training draws from (`all`)."""
        if self.test_windows == "fixed":
            return [self.test_offset]
        return [self.test_offset] + [o for o in range(self.train_offset_max + 1) if o != self.test_offset]

    def clip_span(self, clip: torch.Tensor, train_offset: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """First and last cached frame covered by clip index `clip` at test time (inclusive)."""
        start = (self.test_offset if train_offset is None else train_offset) + clip * self.clip_stride
        return start, start + self.clip_len - 1
