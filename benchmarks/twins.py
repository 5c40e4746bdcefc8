"""The demo model re-exported with the seed's contract, for the seed-style gateway baseline.

The seed twin takes the seed's float32 `input_8`, already scaled by `x/127.5-1`, and answers
`dense_7`, so the seed-style gateway can feed the same network: a comparison between the
gateways then measures their own cost plus the 4x larger float32 payload of that contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SEED_INPUT = "input_8"
SEED_OUTPUT = "dense_7"


def export_seed_twin(demo_version_dir: Path, target: Path, height: int, width: int) -> Path:
    """Write `<target>/1`: a float32 `input_8` -> `dense_7` signature around the demo model."""
    import tensorflow as tf
    from gateway.contract import SCORES_OUTPUT, SERVING_SIGNATURE

    loaded = tf.saved_model.load(str(demo_version_dir))
    input_name = next(iter(loaded.signatures[SERVING_SIGNATURE].structured_input_signature[1]))

    class SeedContract(tf.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)])
        def serve(self, input_8: Any) -> dict[str, Any]:
            pixels = tf.cast(tf.clip_by_value(tf.round((input_8 + 1.0) * 127.5), 0, 255), tf.uint8)
            scores = self.inner.signatures[SERVING_SIGNATURE](**{input_name: pixels})[SCORES_OUTPUT]
            return {SEED_OUTPUT: scores}

    module = SeedContract(loaded)
    version_dir = target / "1"
    tf.saved_model.save(module, str(version_dir), signatures={SERVING_SIGNATURE: module.serve})
    return version_dir
