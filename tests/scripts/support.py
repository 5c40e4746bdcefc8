"""Sizes of the converter tests' real models (built by the fixtures in conftest.py)."""

KERAS_SIZE = (32, 32)
XCEPTION_SIZE = 71
