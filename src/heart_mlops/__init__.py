"""Heart-disease MLOps pipeline: train, track, register and serve a classifier."""

__version__ = "0.1.0"
