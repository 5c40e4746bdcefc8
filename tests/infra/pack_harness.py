"""Evaluate the policy pack's policies on recorded resources, inside .venv-tools.

Usage: .venv-tools/bin/python pack_harness.py RESOURCES_JSON
Prints {"pack": ..., "policies": [...], "violations": [[policy, resource, message], ...]}.
Runs each pulumi-policy ResourceValidationPolicy exactly as the analyzer does: properties
wrapped in pulumi-policy's unknown-checking proxies.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

import pulumi_policy
from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs
from pulumi_policy.proxy import unknown_checking_proxy


def load_pack() -> dict[str, Any]:
    """Run the pack's entry point with PolicyPack recording its arguments instead of serving."""
    recorded: dict[str, Any] = {}

    class RecordingPack:
        def __init__(self, name: str, policies: list[Any], enforcement_level: Any) -> None:
            recorded.update(
                name=name,
                enforcement=str(enforcement_level.value),
                policies=[policy.name for policy in policies],
            )

    serving_pack = pulumi_policy.PolicyPack
    pulumi_policy.PolicyPack = RecordingPack
    try:
        runpy.run_path(str(Path(sys.argv[0]).resolve().parents[2] / "infra" / "policy"))
    finally:
        pulumi_policy.PolicyPack = serving_pack
    return recorded


def main() -> int:
    """Run every policy on every resource of the JSON file in argv[1]."""
    resources = json.loads(Path(sys.argv[1]).read_text())
    pack = load_pack()  # the entry point makes the pack's folder the `policy` package
    from policy.policies import build_policies

    policies = build_policies()
    violations: list[list[str]] = []
    for resource in resources:
        options = PolicyResourceOptions(
            protect=False,
            ignore_changes=[],
            delete_before_replace=None,
            aliases=[],
            custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
            additional_secret_outputs=[],
        )
        args = ResourceValidationArgs(
            resource_type=resource["type"],
            props=unknown_checking_proxy(resource["inputs"]),
            urn=resource["urn"],
            name=resource["name"],
            opts=options,
            provider=None,
        )
        for policy in policies:

            def report(
                message: str, urn: str | None, policy_name: str = policy.name, name: str = args.name
            ) -> None:
                violations.append([policy_name, name, message])

            policy.validate(args, report)
    summary = [
        {
            "name": p.name,
            "enforcement": str(p.enforcement_level.value),
            "description": p.description,
        }
        for p in policies
    ]
    print(json.dumps({"pack": pack, "policies": summary, "violations": violations}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
