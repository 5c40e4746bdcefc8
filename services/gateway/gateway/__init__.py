"""The clothing classifier's HTTP gateway (Flask, no TensorFlow)."""
