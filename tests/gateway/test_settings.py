"""Settings: read once from the environment, typed, refused with the variable's name."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
from gateway.settings import ENV_NAMES, SETTINGS_DOC, Settings, SettingsError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.tf_serving_host == "localhost:8500"
    assert settings.model_name == "clothing-model"
    assert settings.allow_private_urls is False
    assert settings.batch_max_urls == 32
    assert settings.max_requests == 0
    assert settings.load_balancing == "pick_first"


def test_values_are_parsed_by_type() -> None:
    settings = Settings.from_env(
        {
            "TF_SERVING_HOST": "dns:///tf-serving.default.svc.cluster.local:8500",
            "GATEWAY_ALLOW_PRIVATE_URLS": "TRUE",
            "GATEWAY_MODEL_TIMEOUT_SECONDS": "2.5",
            "GATEWAY_BATCH_MAX_URLS": "8",
            "GATEWAY_LABELS": "dress, hat ,pants,",
            "GATEWAY_WORKERS": " ",  # blank means default
        }
    )
    assert settings.allow_private_urls is True
    assert settings.model_timeout == 2.5
    assert settings.batch_max_urls == 8
    assert settings.fallback_labels == ("dress", "hat", "pants")
    assert settings.workers == Settings().workers
    assert settings.load_balancing == "round_robin"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GATEWAY_BATCH_MAX_URLS", "many", "GATEWAY_BATCH_MAX_URLS='many'"),
        ("GATEWAY_BATCH_MAX_URLS", "0", "GATEWAY_BATCH_MAX_URLS: must be between"),
        ("GATEWAY_ALLOW_PRIVATE_URLS", "maybe", "expected true or false"),
        ("GATEWAY_MODEL_TIMEOUT_SECONDS", "-1", "must be > 0"),
        ("GATEWAY_MODEL_RETRIES", "9", "between 1 and 5"),
        ("GATEWAY_MAX_BODY_BYTES", "2000", "GATEWAY_MAX_IMAGE_BYTES"),
        ("GATEWAY_RESIZE_INTERPOLATION", "cubic-ish", "one of nearest"),
        ("GATEWAY_GRPC_LB_POLICY", "random", "round_robin or pick_first"),
        ("GATEWAY_LOG_LEVEL", "loud", "DEBUG, INFO"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({variable: value})


def test_every_setting_has_a_variable_and_is_in_the_readme() -> None:
    assert set(ENV_NAMES) == {field.name for field in fields(Settings)}
    readme = README.read_text()
    section = readme.split("<!-- section:settings -->")[1].split("<!-- /section:settings -->")[0]
    for variable, _ in SETTINGS_DOC.values():
        assert f"`{variable}`" in section, variable
