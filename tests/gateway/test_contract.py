"""gateway.contract: the version scan, the description reader and the resize spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gateway import contract
from gateway.contract import ContractError, ResizeSpec

from tests.helpers import DEMO_MODEL_BASE


def describe(**changes: Any) -> dict[str, Any]:
    description: dict[str, Any] = {
        "name": "clothing-model",
        "labels": ["hat", "pants"],
        "input": {"name": "images", "height": 96, "width": 80},
        "resize": {"library": "pillow", "interpolation": "bilinear", "jpeg_draft": True},
    }
    description.update(changes)
    return description


def test_version_dirs_are_numeric_folders_in_numeric_order(tmp_path: Path) -> None:
    for name in ("2", "10", "1", "tmp", ".3", "7a"):
        (tmp_path / name).mkdir()
    (tmp_path / "11").write_text("a file, not a version")
    assert [p.name for p in contract.version_dirs(tmp_path)] == ["1", "2", "10"]
    assert contract.latest_version_dir(tmp_path).name == "10"


def test_latest_version_of_a_base_without_versions_is_a_contract_error(tmp_path: Path) -> None:
    (tmp_path / "staging").mkdir()
    with pytest.raises(ContractError, match="no numeric version folder"):
        contract.latest_version_dir(tmp_path)
    with pytest.raises(ContractError, match="cannot list"):
        contract.latest_version_dir(tmp_path / "missing")


def test_version_dirs_of_a_missing_base_raise_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        contract.version_dirs(tmp_path / "missing")


def test_the_demo_models_description_reads_to_its_resize_spec() -> None:
    version = contract.latest_version_dir(DEMO_MODEL_BASE)
    description = contract.read_description(version)
    assert contract.description_path(version).is_file()
    assert contract.warmup_path(version).is_file()
    spec = contract.resize_spec(description)
    assert spec == ResizeSpec(
        description["input"]["height"],
        description["input"]["width"],
        description["resize"]["interpolation"],
        description["resize"]["jpeg_draft"],
    )
    assert len(contract.labels(description)) == 10


def test_missing_or_broken_description_is_a_contract_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no model description at"):
        contract.read_description(tmp_path)
    contract.description_path(tmp_path).parent.mkdir()
    contract.description_path(tmp_path).write_text("{not json")
    with pytest.raises(ContractError, match="cannot read"):
        contract.read_description(tmp_path)
    contract.description_path(tmp_path).write_text(json.dumps(["a", "list"]))
    with pytest.raises(ContractError, match="not a JSON object"):
        contract.read_description(tmp_path)


def test_resize_spec_defaults_to_nearest_without_draft() -> None:
    spec = contract.resize_spec(describe(resize={}))
    assert spec == ResizeSpec(96, 80, "nearest", False)


def test_resize_spec_takes_the_signatures_size_and_refuses_a_different_description() -> None:
    assert contract.resize_spec(describe(input={}), 64, 48).height == 64
    with pytest.raises(ContractError, match="says input width 80 but the signature says 81"):
        contract.resize_spec(describe(), 96, 81)


@pytest.mark.parametrize(
    ("resize", "message"),
    [
        ({"interpolation": "cubic"}, "unknown resize interpolation 'cubic'"),
        ({"library": "opencv"}, "resize library 'opencv' is not pillow"),
    ],
)
def test_resize_spec_refuses_what_the_gateway_cannot_reproduce(
    resize: dict[str, str], message: str
) -> None:
    with pytest.raises(ContractError, match=message):
        contract.resize_spec(describe(resize=resize))


def test_resize_spec_needs_a_positive_size() -> None:
    with pytest.raises(ContractError, match="no positive input height and width"):
        contract.resize_spec(describe(input={"height": 0, "width": 80}))


def test_labels_must_be_a_non_empty_list_of_strings() -> None:
    for labels in ([], "hat,pants", ["hat", 3]):
        with pytest.raises(ContractError, match="no list of labels"):
            contract.labels(describe(labels=labels))
