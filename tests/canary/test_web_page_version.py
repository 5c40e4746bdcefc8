"""The web page says which model version answered, and whether it was the canary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.canary.support import Versions, labelled_server
from tests.e2e.test_web_page import DESKTOP, WAIT_MS, read_result


@pytest.mark.slow
def test_the_page_shows_the_canary_version_that_answered(
    browser: Any, versions: Versions, photos: list[Path], logs: Path, tmp_path: Path
) -> None:
    with labelled_server(
        versions.demo, versions.reordered, tmp_path, logs, "page", GATEWAY_CANARY_PERCENT="100"
    ) as gateway:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(gateway.url + "/")
        page.get_by_label("Choose a photo").set_input_files(str(photos[0]))
        shown = read_result(page)
        context.close()
    assert shown.model_version == "3 (canary)"
    assert "version 3 (canary)" in shown.status
