"""Helpers of the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

# API keys of the keyed gateway (the `keyed_gateway` fixture); WRONG_KEY is not one of them
KEY = "e2e-key-Zm9yIHRoZSB3ZWIgdGVhbQ"
SECOND_KEY = "e2e-batch-key-b2YgdGhlIGJhdGNoIGpvYnM"
WRONG_KEY = "e2e-wrong-key-bm90IGEga2V5IGF0IGFsbA"


def photo_url(photo_server: str, dataset_dir: Path, photo: Path) -> str:
    return f"{photo_server}/{photo.relative_to(dataset_dir).as_posix()}"
