"""Benchmarks of the serving stack against the seed: `python -m benchmarks` (`make bench`)."""
