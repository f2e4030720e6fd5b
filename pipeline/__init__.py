"""CEFLNet video facial-expression recognition as an offline preprocessing + feature-cache pipeline."""
from pipeline.align import align

__version__ = "0.1.0"
__all__ = ["align", "__version__"]
