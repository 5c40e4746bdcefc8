"""The narrow seam between the HTTP app and the model: what the app needs to know and call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gateway.contract import INPUT_NAME, SCORES_OUTPUT, SERVING_SIGNATURE, ResizeSpec
from gateway.routing import LATEST, STABLE


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
    # the version label this description was reached through (`latest`: no labels)
    route: str = field(default=LATEST, compare=False)


@dataclass(frozen=True)
class Prediction:
    """Scores for a batch: one row of probabilities per image, columns in `model.labels` order."""

    model: ModelInfo
    scores: np.ndarray


class Predictor(Protocol):
    """Anything that can describe a model and score a batch of uint8 NxHxWx3 images."""

    def model_info(
        self, request_id: str, *, allow_stale: bool = False, route: str = STABLE
    ) -> ModelInfo:
        """The description of the version `route` leads to (cached); GatewayError if none.

        `route` is a version label (`stable`, `canary`); without labels every route leads to
        the newest version (`info.route` says which was used). With `allow_stale`, a
        description read before is returned without asking the model server again, so a hung
        model server cannot make the caller wait.
        """
        ...

    def predict(
        self, images: np.ndarray, request_id: str, *, info: ModelInfo | None = None
    ) -> Prediction:
        """Score a batch with exactly the version `info` describes (default: `stable`'s).

        Raises a GatewayError (ModelUnavailable, ModelVersionUnavailable, ModelTimeout,
        ModelError); the prediction's labels are always those of the version that scored.
        """
        ...

    def invalidate(self, route: str | None = None) -> None:
        """Forget which version a route leads to (every route when None)."""
        ...
