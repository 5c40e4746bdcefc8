"""The gateway as a public endpoint, in real processes: gunicorn with an API keys file in front of
the real model server, real photos; metrics only on their own port; bad set-ups refused."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests

from clothing_tools.local_stack import Running, StackError, free_port, start_gateway
from tests.e2e.support import KEY, SECOND_KEY, WRONG_KEY, photo_url

pytestmark = pytest.mark.slow


def upload(gateway: Running, photo: Path, **headers: str) -> requests.Response:
    return requests.post(
        f"{gateway.url}/predict", files={"file": (photo.name, photo.read_bytes())},
        headers=headers, timeout=60,
    )  # fmt: skip


def test_keyed_gateway_answers_401_403_and_classifies_with_a_key(
    keyed_gateway: Running, photos: list[Path], reference: dict[Path, str]
) -> None:
    photo = photos[0]
    missing = upload(keyed_gateway, photo)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "api_key_required"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer ")
    wrong = upload(keyed_gateway, photo, Authorization=f"Bearer {WRONG_KEY}")
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "api_key_invalid"
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": SECOND_KEY}):
        good = upload(keyed_gateway, photo, **headers)
        assert good.status_code == 200, good.text
        assert good.json()["top"] == reference[photo]


def test_keyed_batch_of_real_photos(
    keyed_gateway: Running, photo_server: str, dataset_dir: Path, photos: list[Path],
    reference: dict[Path, str],
) -> None:  # fmt: skip
    chosen = photos[:: len(photos) // 5][:5]
    body = {"urls": [photo_url(photo_server, dataset_dir, p) for p in chosen]}
    url = f"{keyed_gateway.url}/predict/batch"
    assert requests.post(url, json=body, timeout=60).status_code == 401
    answer = requests.post(url, json=body, headers={"Authorization": f"Bearer {SECOND_KEY}"},
                           timeout=120)  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert [r["top"] for r in answer.json()["results"]] == [reference[p] for p in chosen]


def test_keyed_gateway_keeps_health_page_and_document_open(keyed_gateway: Running) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/"):
        assert requests.get(f"{keyed_gateway.url}{path}", timeout=10).status_code == 200, path


def test_metrics_only_on_the_metrics_port_and_count_refusals(
    keyed_gateway: Running, photos: list[Path]
) -> None:
    public = requests.get(f"{keyed_gateway.url}/metrics", timeout=10,
                          headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    assert public.status_code == 404
    assert public.json()["error"]["code"] == "not_found"
    for _ in range(3):
        assert upload(keyed_gateway, photos[1], **{"X-API-Key": WRONG_KEY}).status_code == 403
    scraped = requests.get(keyed_gateway.metrics_url, timeout=10)
    assert scraped.status_code == 200
    sample = 'gateway_rejections_total{code="api_key_invalid",reason="api_key_invalid"}'
    counts = [float(line.split()[-1]) for line in scraped.text.splitlines()
              if line.startswith(sample + " ")]  # fmt: skip
    assert counts and counts[0] >= 3


def test_keys_never_reach_the_gateway_log(keyed_gateway: Running, photos: list[Path],
                                          logs: Path) -> None:  # fmt: skip
    upload(keyed_gateway, photos[2], Authorization=f"Bearer {WRONG_KEY}")
    upload(keyed_gateway, photos[2], Authorization=f"Bearer {KEY}")
    log = (logs / "keyed-gateway.log").read_text(errors="replace")
    assert '"error_code": "api_key_invalid"' in log
    for key in (KEY, SECOND_KEY, WRONG_KEY):
        assert key not in log


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the keys file: No such file or directory"),
        ("# no key here\n", "the file holds no key"),
    ],
)
def test_gateway_refuses_to_start_without_usable_keys(
    model_server: Running, tmp_path: Path, content: str | None, message: str
) -> None:
    keys = tmp_path / "keys"
    if content is not None:
        keys.write_text(content)
    log = tmp_path / "gateway.log"
    with pytest.raises(StackError, match="exited with code 1"), start_gateway(
        tf_serving_host=model_server.grpc_target, port=free_port(), log=log,
        env={"GATEWAY_API_KEYS_FILE": str(keys), "GATEWAY_WORKERS": "1"},
    ):  # fmt: skip
        pass
    assert f"gateway: GATEWAY_API_KEYS_FILE={keys}: {message}" in log.read_text()


def test_gateway_refuses_to_start_when_the_metrics_port_is_taken(
    model_server: Running, tmp_path: Path
) -> None:
    log = tmp_path / "gateway.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StackError, match="exited with code 1"), start_gateway(
            tf_serving_host=model_server.grpc_target, port=free_port(), metrics_port=port,
            log=log, env={"GATEWAY_WORKERS": "1"},
        ):  # fmt: skip
            pass
    assert f"GATEWAY_METRICS_BIND=127.0.0.1:{port}: cannot listen" in log.read_text()
