"""Policy pack entry point: `pulumi preview --policy-pack infra/policy`."""

import sys
from pathlib import Path

# The pack's modules are imported as the `policy` package, whichever directory Pulumi
# starts the pack from.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.policies import build_policies

PolicyPack(
    name="clothing-serving-security",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=build_policies(),
)
