"""The demo dataset: expression videos generated from real face photos (`generate_demo`)."""
from pipeline.demo.generate import CLASSES, generate_demo

__all__ = ["CLASSES", "generate_demo"]
