"""The rules of `policy.rules` as pulumi-policy ResourceValidationPolicies."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from .rules import RULES

DESCRIPTIONS = {
    "pods-restricted": "Pods meet Pod Security `restricted` and use a read-only root filesystem.",
    "no-unused-service-account-tokens": "Application pods mount no service account token.",
    "containers-set-resources": "Every container requests and limits CPU and memory.",
    "only-gateway-is-public": "No Service but the gateway is reachable from outside the cluster.",
    "no-public-metrics": "No Service reachable from outside forwards to a metrics port.",
    "nodes-imdsv2-hop-limit-1": "Nodes require IMDSv2 with a hop limit of 1.",
    "ecr-immutable-and-scanned": "ECR repositories have immutable tags and scan on push.",
}


def _validator(
    rule: Callable[[str, Mapping[str, Any]], list[str]],
) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule(args.resource_type, args.props):
            report_violation(message, None)

    return validate


def build_policies() -> list[ResourceValidationPolicy]:
    """One mandatory policy per rule."""
    return [
        ResourceValidationPolicy(
            name=name,
            description=DESCRIPTIONS[name],
            enforcement_level=EnforcementLevel.MANDATORY,
            validate=_validator(rule),
        )
        for name, rule in RULES.items()
    ]
