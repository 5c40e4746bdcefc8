"""A TF Serving-compatible development model server (gRPC + REST) on TensorFlow."""

__version__ = "0.1.0"
