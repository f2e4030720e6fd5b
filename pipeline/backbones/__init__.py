"""Frozen per-frame feature backbones: (B, 3, 224, 224) RGB 0..255 crops -> (B, D) float32 features.

Built in: `resnet18` (resnet.py) and `retinaface_mnet` (mnet.py). Plug-ins (plugins.py):
`timm:<model_name>` (timm_plugin.py) and `open_clip:<arch>` (clip_plugin.py), optional extras.
"""
from __future__ import annotations

from pipeline.align import DEFAULT_MARGIN, builtin_margin  # noqa: F401  (defined beside the crop: detect reads it)
