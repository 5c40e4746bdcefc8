"""The narrow seam between the HTTP app and the model: what the app needs to know and call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gateway.contract import INPUT_NAME, SCORES_OUTPUT, SERVING_SIGNATURE, ResizeSpec


@dataclass(frozen=True)
class ModelInfo:
    """What the gateway feeds the served model and how it reads the answer."""

    name: str
    version: int
    labels: tuple[str, ...]
    resize: ResizeSpec
    input_name: str = INPUT_NAME
    scores_output: str = SCORES_OUTPUT
    signature: str = SERVING_SIGNATURE


@dataclass(frozen=True)
class Prediction:
    """Scores for a batch: one row of probabilities per image, columns in `model.labels` order."""

    model: ModelInfo
    scores: np.ndarray


class Predictor(Protocol):
    """Anything that can describe a model and score a batch of uint8 NxHxWx3 images."""

    def model_info(self, request_id: str, *, allow_stale: bool = False) -> ModelInfo:
        """The served model's description (cached); raises a GatewayError when unavailable.

        With `allow_stale`, a description read before is returned without asking the model
        server again, so a hung model server cannot make the caller wait.
        """
        ...

    def predict(self, images: np.ndarray, request_id: str) -> Prediction:
        """Score a batch; raises a GatewayError (ModelUnavailable, ModelTimeout, ModelError)."""
        ...
