"""The application namespace: Pod Security `restricted`, ingress denied unless allowed."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from clothing_infra.pods import fields


class AppNamespace(pulumi.ComponentResource):
    """Namespace enforcing the restricted Pod Security profile, with a default-deny ingress."""

    name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        namespace: str,
        kubernetes_version: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:k8s:AppNamespace", name, None, opts)
        pss_version = f"v{kubernetes_version}"
        created = k8s.core.v1.Namespace(
            name,
            metadata=fields(
                {
                    "name": namespace,
                    "labels": {
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": pss_version,
                        "pod-security.kubernetes.io/audit": "restricted",
                        "pod-security.kubernetes.io/audit-version": pss_version,
                        "pod-security.kubernetes.io/warn": "restricted",
                        "pod-security.kubernetes.io/warn-version": pss_version,
                    },
                }
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        deny_all_ingress: dict[str, Any] = {"podSelector": {}, "policyTypes": ["Ingress"]}
        k8s.networking.v1.NetworkPolicy(
            f"{name}-default-deny-ingress",
            metadata=fields({"name": "default-deny-ingress", "namespace": created.metadata.name}),
            spec=fields(deny_all_ingress),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = created.metadata.name
        self.register_outputs({"name": self.name})
