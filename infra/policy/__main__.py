"""Policy pack entry point: `pulumi preview --policy-pack infra/policy`."""

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from pulumi_policy import EnforcementLevel, PolicyPack


def policy_module(name: str) -> ModuleType:
    """`policy.<name>`: installed in the project's environment; in the pack's own virtualenv
    (where Pulumi runs this folder, with only requirements.txt installed) this folder is loaded
    as the `policy` package by the import system, not by editing sys.path."""
    try:
        return importlib.import_module(f"policy.{name}")
    except ModuleNotFoundError:
        here = Path(__file__).resolve().parent
        spec = importlib.util.spec_from_file_location(
            "policy", here / "__init__.py", submodule_search_locations=[str(here)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["policy"] = package
        spec.loader.exec_module(package)
        return importlib.import_module(f"policy.{name}")


PolicyPack(
    name="clothing-serving-security",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=policy_module("policies").build_policies(),
)
