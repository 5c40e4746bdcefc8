"""Debian's headless Chromium for the page tests: one Playwright session for the whole run.

A pytest plugin (tests/conftest.py), so every package that drives the page shares the one
session-scoped `browser`: Playwright's sync API cannot run two sessions in one process.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ensure_chromium() -> None:
    """Install Debian's chromium the way `make browser` does; skip only when that is impossible."""
    if CHROMIUM.exists():
        return
    if shutil.which("make") is None:
        pytest.skip(f"Chromium is not at {CHROMIUM} and make is missing to install it")
    done = subprocess.run(
        ["make", "-C", str(REPO_ROOT), "browser"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not CHROMIUM.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        pytest.skip(
            f"Chromium is not at {CHROMIUM} and `make browser` could not install it: "
            + " / ".join(tail)
        )


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser build)."""
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
