"""Settings: read once from the environment, typed, refused with the variable's name."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from pathlib import Path

import pytest
from gateway.settings import Settings, SettingsError, declaration, markdown_table

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
        ("GATEWAY_METRICS_BIND", "9697", "GATEWAY_METRICS_BIND: must be HOST:PORT"),
        ("GATEWAY_METRICS_BIND", "127.0.0.1:9696", "another port than GATEWAY_BIND"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({variable: value})


def test_every_setting_is_declared_with_a_distinct_variable_and_a_doc() -> None:
    declared = [declaration(field.name) for field in fields(Settings)]
    variables = [d.env for d in declared]
    assert len(set(variables)) == len(variables)
    assert all(v == "TF_SERVING_HOST" or v.startswith("GATEWAY_") for v in variables)
    assert all(d.doc for d in declared)


def test_the_readme_table_is_the_one_generated_from_the_declarations() -> None:
    readme = README.read_text()
    section = readme.split("<!-- section:settings -->")[1].split("<!-- /section:settings -->")[0]
    assert markdown_table() in section, "run `python -m gateway.settings` and paste its table"


def test_defaults_pass_their_own_checks() -> None:
    Settings().validate()


def test_validate_checks_values_set_in_code_too() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_THREADS: must be >= 1"):
        replace(Settings(), threads=0).validate()
