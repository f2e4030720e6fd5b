"""The trainable backbone, its frame classifier, the adapted blocks, L2-SP and batched augmentation.

`frame` mode (issue 12): backbone + one linear layer on single frames, each labelled with its video's
label; `end_to_end`: backbone + the CEFLNet head on the paper's sampled clips (`ClipModel`). Robustness choices, because the detector body has its BatchNorm folded into its convolutions and
plain fine-tuning collapsed to chance at lr 1e-4 (issue 12's measurement):

- the classifier trains alone for `head_epochs` first (a random head's gradients never reach the body);
- only the last `train_layers` blocks adapt, at `body_lr`, held near their start by L2-SP
  (Li, Grandvalet & Davoine, "Explicit inductive bias for transfer learning", ICML 2018:
  alpha * ||w - w0||^2 on the pretrained weights);
- ResNet-18's BatchNorm layers stay in eval mode (running statistics frozen): batches of a few frames of
  a few people would give noisy statistics that the cache's single-frame extraction never sees.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.config import ExtractConfig
from pipeline.errors import PipelineError
from pipeline.features import FeatureExtractor, build_extractor


def trainable_extractor(e: ExtractConfig) -> FeatureExtractor:
    """extract's backbone with a torch module that takes gradients, same weights and preprocessing."""
    if e.backbone not in ("resnet18", "retinaface_mnet"):
        raise PipelineError(f"finetune supports extract.backbone resnet18 and retinaface_mnet, got {e.backbone!r}")
    from pipeline.backbones.mnet import RetinaFaceMNetFeatures, build_mnet_features

    ext = build_extractor(e)
    if e.backbone == "retinaface_mnet" and not isinstance(ext.module, RetinaFaceMNetFeatures):
        # On the CPU extract runs the body in onnxruntime (no gradients); the torch port has the same
        # weights and features within 1e-5 (pipeline/backbones/mnet.py).
        module = build_mnet_features().to(ext.device).to(memory_format=torch.channels_last)
        ext = dataclasses.replace(ext, module=module)
    return ext


def blocks_of(backbone: str, module: nn.Module) -> list[nn.Module]:
    """The body's blocks in forward order; `train_layers` counts from the end of this list."""
    if backbone == "retinaface_mnet":
        body = module.body
        return [*body.stage1, *body.stage2, *body.stage3]  # 14 blocks; stage2/3 feed the 384-d features
    return [nn.ModuleList([module.conv1, module.bn1]),
            *module.layer1, *module.layer2, *module.layer3, *module.layer4]  # 9 blocks


class FrameClassifier(nn.Module):
    """Backbone features -> linear logits, for frame-level training."""

    def __init__(self, backbone: nn.Module, dim: int, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))  # (B, D) -> (B, C)

    def train(self, mode: bool = True) -> FrameClassifier:
        super().train(mode)
        self.backbone.eval()  # BatchNorm statistics frozen (module docstring)
        return self


class ClipModel(nn.Module):
    """`end_to_end` mode: backbone -> per-video median centring -> CEFLNet head, on sampled crop clips.

    The head is the paper's (TrainHeadConfig defaults, `center: none` on the already centred input): the
    backbone is adapted through the head's gradients, as the authors train ResNet-18 with it. Centring
    over the 35 sampled frames keeps identity out of what the head sees (issue 11), with no reference to
    frames outside the batch. Only the backbone is kept: train-head trains its own head on the cache."""

    def __init__(self, backbone: nn.Module, dim: int, n_classes: int):
        super().__init__()
        from pipeline.config import TrainHeadConfig
        from pipeline.head.baselines import build_head

        self.backbone = backbone
        self.fc = build_head(TrainHeadConfig(center="none"), dim, n_classes)  # `fc`: the checkpoint's classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, K, 3, S, S) network input -> (B, C)
        b, n, k = x.shape[:3]
        f = self.backbone(x.flatten(0, 2)).float().view(b, n, k, -1)  # (B, n, K, D)
        f = f - f.flatten(1, 2).median(dim=1).values.view(b, 1, 1, -1)
        return self.fc(f).logits

    def train(self, mode: bool = True) -> ClipModel:
        super().train(mode)
        self.backbone.eval()  # BatchNorm statistics frozen (module docstring)
        return self


def adapted_parameters(blocks: list[nn.Module], train_layers: int) -> list[nn.Parameter]:
    chosen = blocks[len(blocks) - train_layers:] if train_layers else []
    return [p for b in chosen for p in b.parameters()]


def l2sp_penalty(params: list[nn.Parameter], start: list[torch.Tensor]) -> torch.Tensor:
    """sum ||w - w0||^2 over the adapted tensors (multiplied by `finetune.l2sp` by the caller)."""
    return sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start))


def lr_factor(epoch: int, epochs: int) -> float:
    """Cosine decay over the run, per epoch: 1 at the first epoch, towards 0 at the last."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def augment(x: torch.Tensor, gen: torch.Generator, *, scale_min: float, flip: bool, jitter: float) -> torch.Tensor:
    """Random resized crop (square, side fraction in [scale_min, 1]), horizontal flip and brightness/contrast
    jitter on a whole batch at once: one affine grid sample, no per-image Python loop.

    Args:
        x: (B, 3, S, S) uint8 RGB crops.
        gen: CPU generator (its draws do not depend on the device the batch is on).

    Returns:
        (B, 3, S, S) float32 in 0..255.
    """
    b = x.shape[0]
    r = torch.rand((b, 5), generator=gen)  # scale, x shift, y shift, brightness, contrast
    s = scale_min + (1.0 - scale_min) * r[:, 0]
    tx, ty = (2 * r[:, 1] - 1) * (1 - s), (2 * r[:, 2] - 1) * (1 - s)  # the window stays inside the image
    sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    theta = torch.zeros((b, 2, 3))
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = s * sign, tx, s, ty
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)  # (B, S, S, 2)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter:
        bright = (1 + jitter * (2 * r[:, 3] - 1)).to(x.device).view(b, 1, 1, 1)
        contrast = (1 + jitter * (2 * r[:, 4] - 1)).to(x.device).view(b, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * contrast + mean) * bright
    return out.clamp_(0, 255)


def network_input(ext: FeatureExtractor, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) 0..255 -> what extract feeds this backbone: extract's own normalisation, so the
    adapted backbone sees its inputs as the frozen cache's did (FeatureExtractor takes (B, S, S, 3))."""
    return ext._prepare(x.permute(0, 2, 3, 1))


@torch.inference_mode()
def features_of(ext: FeatureExtractor, crops: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(T, 3, S, S) uint8 -> (T, D) float32 features, no augmentation, eval mode."""
    ext.module.eval()
    out = []
    for s in range(0, len(crops), batch_size):
        x = network_input(ext, crops[s:s + batch_size].to(ext.device))
        with torch.autocast(ext.device.type, dtype=ext.autocast_dtype, enabled=ext.autocast_dtype is not None):
            out.append(ext.module(x).float().cpu())
    return torch.cat(out)
