"""Frozen per-frame feature backbones: (B, 3, 224, 224) RGB 0..255 crops -> (B, D) float32 features."""
