"""Which model version label a request goes to: canary share and shadow sampling.

TF Serving's model config names versions with the labels `stable` and `canary`; the gateway
sends `GATEWAY_CANARY_PERCENT` of requests to `canary` and compares `GATEWAY_SHADOW_PERCENT`
of the `stable` ones against `canary` in the background.
"""

from __future__ import annotations

import random
import threading

STABLE = "stable"
CANARY = "canary"
LATEST = "latest"  # no version labels in the model config: the newest version, as before
ROUTES = (STABLE, CANARY, LATEST)

# frac(n * (golden ratio - 1)) is the most evenly spread sequence in [0, 1): any run of
# requests gets the configured share to within a request or two, with no short period a
# client's own pattern could line up with (unlike a counter modulo 10).
_GOLDEN = 0.6180339887498949


class Sampler:
    """Says yes to `percent` % of calls, spread evenly (thread-safe)."""

    def __init__(self, percent: float, start: float | None = None) -> None:
        self.share = percent / 100.0
        # a random start per process so replicas do not move in step (not security-relevant)
        self._position = random.random() if start is None else start  # noqa: S311
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        """Whether this call is in the share."""
        if self.share <= 0.0:
            return False
        if self.share >= 1.0:
            return True
        with self._lock:
            self._position = (self._position + _GOLDEN) % 1.0
            return self._position < self.share


class Router:
    """Picks the version label of each request and whether it is shadowed."""

    def __init__(self, canary_percent: float, shadow_percent: float) -> None:
        self.canary = Sampler(canary_percent)
        self.shadow = Sampler(shadow_percent)

    def route(self) -> str:
        """`canary` for the canary share, else `stable` (mapped to `latest` without labels)."""
        return CANARY if self.canary() else STABLE
