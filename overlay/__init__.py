"""overlay: a CUDA-aware distributed GPU job scheduler (the pure domain core)."""

__version__ = "0.1.0"
