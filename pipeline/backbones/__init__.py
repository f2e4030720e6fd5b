"""Frozen per-frame feature backbones: (B, 3, 224, 224) RGB 0..255 crops -> (B, D) float32 features.

Built in: `resnet18` (resnet.py) and `retinaface_mnet` (mnet.py). Plug-ins (plugins.py):
`timm:<model_name>` (timm_plugin.py) and `open_clip:<arch>` (clip_plugin.py), optional extras.
"""
from __future__ import annotations

# Default `extract.margin` per backbone family, used when the parameter is null. The plug-ins'
# values live in their modules (timm_plugin.MARGIN, clip_plugin.MARGIN); they are repeated here
# so the detect QC sheet can draw the crop without importing the libraries (a test keeps them equal).
DEFAULT_MARGIN = {"resnet18": 0.0, "retinaface_mnet": 0.0, "timm": 0.0, "open_clip": 0.25}


def builtin_margin(backbone: str) -> float:
    """The default margin of a backbone name (`timm:...` and `open_clip:...` by their library)."""
    return DEFAULT_MARGIN.get(backbone.partition(":")[0], 0.0)
