"""The CEFLNet head trained on the feature cache (docs/head.md)."""
from pipeline.head.baselines import KINDS, build_head
from pipeline.head.model import CEFLNet, HeadOutput
from pipeline.head.train import LoadedHead, load_head

__all__ = ["CEFLNet", "HeadOutput", "KINDS", "LoadedHead", "build_head", "load_head"]
