"""Helpers of the end-to-end tests."""

from __future__ import annotations

from pathlib import Path


def photo_url(photo_server: str, dataset_dir: Path, photo: Path) -> str:
    return f"{photo_server}/{photo.relative_to(dataset_dir).as_posix()}"
