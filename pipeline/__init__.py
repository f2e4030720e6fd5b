"""CEFLNet video facial-expression recognition as an offline preprocessing + feature-cache pipeline.

Nothing is imported here: every module of the package runs this file first, so whatever it imported
would be a code dependency of every stage (`pipeline/registry.py`)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
