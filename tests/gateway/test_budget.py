"""The decode memory budget: where the limit comes from, waiting and refusing, format caps."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from gateway.app import create_app
from gateway.budget import (
    DEFAULT_MEMORY_LIMIT,
    MASTER_BYTES,
    MIB,
    DecodeBudget,
    container_memory_limit,
    decode_cost,
    worker_budget,
    worst_case_bytes,
)
from gateway.contract import ResizeSpec
from gateway.errors import DecodeBusy, ImageTooCostly, TooManyPixels
from gateway.fetch import FetchedImage
from gateway.images import load_model_input
from gateway.service import decode_budget
from gateway.settings import Settings, SettingsError
from PIL import Image
from werkzeug.datastructures import FileStorage
from werkzeug.test import stream_encode_multipart

from tests.gateway.support import ScriptedPredictor
from tests.reliability import bombs

DRAFT = ResizeSpec(112, 112, "bilinear", jpeg_draft=True)
NO_DRAFT = ResizeSpec(112, 112, "bilinear", jpeg_draft=False)
MAX_BYTES, MAX_PIXELS = 10 * MIB, 40_000_000


def test_the_memory_limit_comes_from_the_setting_then_cgroup_v2_then_v1_then_the_default(
    tmp_path: Path,
) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert container_memory_limit(0, v2, v1) == (DEFAULT_MEMORY_LIMIT, "default")
    v1.write_text("9223372036854771712\n")  # v1's "no limit"
    assert container_memory_limit(0, v2, v1) == (DEFAULT_MEMORY_LIMIT, "default")
    v1.write_text("536870912\n")
    assert container_memory_limit(0, v2, v1) == (512 * MIB, str(v1))
    v2.write_text("max\n")  # v2's "no limit" falls through to v1
    assert container_memory_limit(0, v2, v1) == (512 * MIB, str(v1))
    v2.write_text("1073741824\n")
    assert container_memory_limit(0, v2, v1) == (1024 * MIB, str(v2))
    assert container_memory_limit(805306368, v2, v1) == (768 * MIB, "GATEWAY_MEMORY_LIMIT_BYTES")


def test_workers_with_their_full_budgets_fill_the_limit_and_no_more() -> None:
    for limit, workers in ((768 * MIB, 2), (768 * MIB, 3), (2048 * MIB, 4)):
        baseline = 112 * MIB
        assert worker_budget(limit, workers, baseline) > 0
        assert limit - workers < worst_case_bytes(limit, workers, baseline) <= limit
        assert worst_case_bytes(limit, workers, baseline) >= MASTER_BYTES


def test_a_limit_that_leaves_no_decode_budget_stops_the_worker_from_starting() -> None:
    settings = Settings(memory_limit_bytes=768 * MIB, workers=6)
    with pytest.raises(SettingsError, match="GATEWAY_WORKERS=6"):
        decode_budget(settings)
    assert decode_budget(replace(settings, workers=2)).capacity == (768 - 48) // 2 * MIB - 112 * MIB


def test_a_reservation_waits_for_room_and_gets_it_when_another_is_released() -> None:
    budget = DecodeBudget(100 * MIB, wait_seconds=5, retry_after=3)
    got_room = threading.Event()

    def second() -> None:
        with budget.reserve(60 * MIB):
            got_room.set()

    with budget.reserve(60 * MIB):
        waiter = threading.Thread(target=second)
        waiter.start()
        assert not got_room.wait(0.3)  # 60 + 60 > 75 (the heavy share of 100)
    assert got_room.wait(5)
    waiter.join()
    assert budget.in_use == 0 and budget.peak == 60 * MIB


def test_a_reservation_that_finds_no_room_in_time_is_503_decode_busy_with_retry_after() -> None:
    budget = DecodeBudget(100 * MIB, wait_seconds=0.2, retry_after=3)
    with budget.reserve(70 * MIB):
        started = time.monotonic()
        with pytest.raises(DecodeBusy) as raised, budget.reserve(20 * MIB):
            pass
        assert 0.2 <= time.monotonic() - started < 2
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (
        503,
        "decode_busy",
        3,
    )
    assert budget.in_use == 0


def test_costly_decodes_leave_a_quarter_of_the_budget_to_small_ones() -> None:
    budget = DecodeBudget(100 * MIB, wait_seconds=0.1, retry_after=1)
    with budget.reserve(75 * MIB):
        with pytest.raises(DecodeBusy), budget.reserve(17 * MIB):  # costly: waits, refused
            pass
        with budget.reserve(16 * MIB), budget.reserve(9 * MIB):  # photos: still room
            assert budget.in_use == 100 * MIB


def test_an_image_needing_more_than_a_worker_ever_gives_is_413_image_too_costly() -> None:
    budget = DecodeBudget(100 * MIB, wait_seconds=5, retry_after=1)
    started = time.monotonic()
    with pytest.raises(ImageTooCostly, match="76 MiB"), budget.reserve(76 * MIB):
        pass
    assert time.monotonic() - started < 1  # refused without waiting


@pytest.mark.parametrize(
    ("data", "spec", "refused"),
    [
        (lambda: bombs.png((4000, 4000), 3, transparent=True), DRAFT, None),
        (lambda: bombs.png((4001, 4000)), DRAFT, "PNG images may have at most 16000000"),
        (lambda: bombs.gif((4001, 4000)), DRAFT, "GIF images may have at most 16000000"),
        (lambda: bombs.bmp_rle8((4001, 4000)), DRAFT, "BMP images may have at most 16000000"),
        (lambda: bombs.webp((2829, 2828)), DRAFT, "WEBP images may have at most 8000000"),
        (lambda: bombs.jpeg(), DRAFT, None),
        (lambda: bombs.jpeg(), NO_DRAFT, "full-size JPEGs may have at most 16000000"),
        (lambda: bombs.jpeg(progressive=True), DRAFT, "progressive JPEGs may have at most"),
    ],
    ids=["png-16mpx", "png", "gif", "bmp", "webp", "jpeg-draft", "jpeg-full", "jpeg-progressive"],
)
def test_each_format_has_its_pixel_cap(
    data: Callable[[], bytes], spec: ResizeSpec, refused: str | None
) -> None:
    raw = data()
    if refused is not None:
        with pytest.raises(TooManyPixels, match=refused):
            load_model_input(raw, spec, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    else:
        image = load_model_input(raw, spec, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        assert image.shape == (112, 112, 3)


def test_the_reserved_cost_follows_the_decode_path() -> None:
    def cost(data: bytes, spec: ResizeSpec = DRAFT) -> float:
        with Image.open(io.BytesIO(data)) as image:
            return float(decode_cost(image, spec, len(data)) / MIB)

    side = (2000, 2000)  # 4 Mpx
    grey, palette_alpha = cost(bombs.png(side, 0)), cost(bombs.png(side, 3, transparent=True))
    assert 19 < grey < 30  # grey (1) + RGB (4) bytes a pixel
    assert palette_alpha - grey == pytest.approx(4e6 * 4 / MIB, abs=1.5)  # + RGBA on the way
    assert cost(bombs.webp(side)) > palette_alpha  # libwebp's own buffers
    baseline = bombs.jpeg(side)
    assert cost(baseline) < 6 < cost(baseline, NO_DRAFT)  # draft decodes at 1/8 scale


class HeldDownload:
    """A downloader whose body claims `holding` bytes, then waits until `release`."""

    def __init__(self, data: bytes, holding: int) -> None:
        self.data = data
        self.holding = holding
        self.started = threading.Event()
        self.released = threading.Event()

    def __call__(self, url: str, hold: Callable[[int], None]) -> FetchedImage:
        hold(self.holding)  # as fetch_image does for a declared Content-Length
        self.started.set()
        self.released.wait(10)
        return FetchedImage(data=self.data, final_url=url, elapsed=0.0)


def test_a_full_budget_answers_503_decode_busy_with_retry_after_and_photos_still_pass(
    settings: Settings,
) -> None:
    # a 40 MiB decode budget per worker: (352 MiB - 48) / 2 - 112; costly decodes get 30 MiB
    tight = replace(
        settings,
        max_image_bytes=12 * MIB,
        max_body_bytes=13 * MIB,
        max_image_pixels=40_000_000,
        memory_limit_bytes=352 * MIB,
        decode_wait=0.2,
    )
    photo = bombs.jpeg((640, 480))
    download = HeldDownload(photo, holding=12 * MIB)
    app = create_app(tight, predictor=ScriptedPredictor({}), fetcher=download)
    costly = bombs.png((1800, 1800))  # grey: about 21 MiB to decode
    held = threading.Thread(
        target=lambda: app.test_client().post("/predict", json={"url": "http://i.test/a.jpg"})
    )
    held.start()  # its download holds 12 MiB of body
    assert download.started.wait(5)
    client = app.test_client()
    busy = client.post("/predict", data={"file": (io.BytesIO(costly), "c.png")})
    small = client.post("/predict", data={"file": (io.BytesIO(photo), "p.jpg")})
    download.released.set()
    held.join()
    assert busy.status_code == 503
    assert busy.get_json()["error"]["code"] == "decode_busy"
    assert busy.headers["Retry-After"] == str(tight.retry_after)
    assert small.status_code == 200  # the quarter kept for small images
    after = client.post("/predict", data={"file": (io.BytesIO(costly), "c.png")})
    assert after.status_code == 200


def test_a_json_body_larger_than_the_largest_batch_is_413_before_it_is_parsed(
    settings: Settings,
) -> None:
    client = create_app(settings, predictor=ScriptedPredictor({})).test_client()
    longest = "ftp://" + "a" * 2040  # a URL of the longest accepted length (2048)
    full = client.post("/predict/batch", json={"urls": [longest] * settings.batch_max_urls})
    assert full.status_code == 200  # each entry has its own error, the body was fine
    assert {r["error"]["code"] for r in full.get_json()["results"]} == {"forbidden_url"}
    nested = b'{"urls": [' + b",".join([b"[]"] * 40_000) + b"]}"  # 120 KB of empty lists
    refused = client.post("/predict/batch", data=nested, content_type="application/json")
    assert refused.status_code == 413
    assert refused.get_json()["error"]["code"] == "payload_too_large"


def test_an_upload_body_is_reserved_before_it_is_parsed_so_spooled_uploads_are_bounded(
    settings: Settings,
) -> None:
    # a 40 MiB budget per worker: a held download takes 30 MiB, 10 MiB stay free
    tight = replace(
        settings,
        max_image_bytes=12 * MIB,
        max_body_bytes=13 * MIB,
        memory_limit_bytes=352 * MIB,
        decode_wait=0.2,
    )
    photo = bombs.jpeg((640, 480))
    download = HeldDownload(photo, holding=30 * MIB)
    app = create_app(tight, predictor=ScriptedPredictor({}), fetcher=download)
    held = threading.Thread(
        target=lambda: app.test_client().post("/predict", json={"url": "http://i.test/a.jpg"})
    )
    held.start()
    assert download.started.wait(5)
    client = app.test_client()
    # the image is small, but werkzeug would spool the whole 12 MiB body to /tmp to find it
    # (encoded in memory here: the test client's own temporary file would outlive the 503)
    body, _length, boundary = stream_encode_multipart(
        {
            "padding": FileStorage(io.BytesIO(b"\0" * 12 * MIB), "pad.bin"),
            "file": FileStorage(io.BytesIO(photo), "p.jpg"),
        },
        use_tempfile=False,
    )
    padded = client.post(
        "/predict",
        data=body.read(),
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    small = client.post("/predict", data={"file": (io.BytesIO(photo), "p.jpg")})
    download.released.set()
    held.join()
    assert padded.status_code == 503, padded.get_json()
    assert padded.get_json()["error"]["code"] == "decode_busy"
    assert small.status_code == 200
