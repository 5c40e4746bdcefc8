"""Run the Pulumi program under Pulumi's unit-test mocks and write what it declared as JSON.

Usage: python program_runner.py CONFIG_JSON OUT_JSON [--preview]

Runs in its own process so each stack variant gets a fresh Pulumi runtime. The working
directory and sys.path are set up as the Pulumi CLI does for `main: infra/`.
"""

from __future__ import annotations

import hashlib
import json
import runpy
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
PROJECT = "clothing-serving"
ACCOUNT = "123456789012"
ZONES = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

sys.path.insert(0, str(INFRA))

import pulumi  # noqa: E402
from pulumi.runtime import mocks, rpc  # noqa: E402
from pulumi.runtime.proto import resource_pb2  # noqa: E402
from pulumi.runtime.settings import get_root_resource  # noqa: E402
from pulumi.runtime.stack import Stack, run_pulumi_func  # noqa: E402
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await  # noqa: E402


def _kubeconfig(cluster_name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster_name,
                    "cluster": {
                        "server": "https://example.eks.invalid",
                        "certificate-authority-data": "Cg==",
                    },
                }
            ],
            "contexts": [
                {"name": cluster_name, "context": {"cluster": cluster_name, "user": "aws"}}
            ],
            "current-context": cluster_name,
            "users": [
                {"name": "aws", "user": {"exec": {"command": "aws", "args": ["eks", "get-token"]}}}
            ],
        }
    )


class StackMocks(mocks.Mocks):
    """Provider answers: echo inputs back, plus the outputs AWS or Kubernetes would add."""

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        resource_id = f"{args.name}-id"
        if args.custom and "name" not in outputs:
            outputs["name"] = f"{args.name}-4f3c2a1"  # what auto-naming would add
        if args.typ == "eks:index:Cluster":
            outputs["kubeconfigJson"] = _kubeconfig(args.inputs.get("name", args.name))
            outputs["kubeconfig"] = json.loads(outputs["kubeconfigJson"])
        elif args.typ == "aws:ecr/repository:Repository":
            outputs["repositoryUrl"] = (
                f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/{args.inputs['name']}"
            )
            outputs["registryId"] = ACCOUNT
            outputs["arn"] = f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/{args.inputs['name']}"
        elif args.typ == "docker-build:index:Image":
            digest = (
                "sha256:"
                + hashlib.sha256(json.dumps(args.inputs, sort_keys=True).encode()).hexdigest()
            )
            outputs["digest"] = digest
            outputs["ref"] = f"{args.inputs['tags'][0]}@{digest}"
        elif args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            outputs["latestVersion"] = 1
        elif args.typ == "aws:iam/role:Role":
            outputs["arn"] = f"arn:aws:iam::{ACCOUNT}:role/{outputs['name']}"
        elif (
            args.typ == "kubernetes:core/v1:Service"
            and args.inputs.get("spec", {}).get("type") == "LoadBalancer"
        ):
            host = f"{args.name}-0123456789abcdef.elb.eu-west-1.amazonaws.com"
            outputs["status"] = {"loadBalancer": {"ingress": [{"hostname": host}]}}
        return resource_id, outputs

    def call(self, args: mocks.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": ZONES, "zoneIds": ["euw1-az1", "euw1-az2", "euw1-az3"]}
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "userName": "AWS",
                "password": "mock-ecr-token",
                "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com",
                "authorizationToken": "QVdTOm1vY2s=",
            }
        return {}


def _unwrap_secrets(value: Any, path: str, secrets: list[str]) -> Any:
    """Replace Pulumi's secret envelopes by their values, noting where they were."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            secrets.append(path)
            return _unwrap_secrets(value["value"], path, secrets)
        return {k: _unwrap_secrets(v, f"{path}.{k}".lstrip("."), secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


class RecordingMonitor(mocks.MockMonitor):
    """Records every registration with its graph edges, without resource references.

    Not advertising resource references (and output values) keeps the mock monitor from
    deserializing references to component resources on another event loop, which made
    runs with pulumi-eks components hang or fail intermittently.
    """

    def __init__(self, stack_mocks: mocks.Mocks) -> None:
        super().__init__(stack_mocks)
        self.records: list[dict[str, Any]] = []

    def SupportsFeature(self, request: Any) -> Any:
        has_support = request.id not in ("outputValues", "resourceReferences")
        return type("SupportsFeatureResponse", (object,), {"hasSupport": has_support})

    def GetDeploymentInfo(self, request: Any) -> Any:
        info = super().GetDeploymentInfo(request)
        features = [
            feature
            for feature in info.supportedFeatures
            if feature != resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES
        ]
        return resource_pb2.DeploymentInfo(supportedFeatures=features)

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        _ensure_event_loop()
        secret_inputs: list[str] = []
        inputs = _unwrap_secrets(rpc.deserialize_properties(request.object), "", secret_inputs)
        self.records.append(
            {
                "urn": response.urn,
                "id": response.id,
                "type": request.type,
                "name": request.name,
                "custom": request.custom,
                "parent": request.parent,
                "provider": request.provider,
                "dependencies": sorted(set(request.dependencies)),
                "ignore_changes": list(request.ignoreChanges),
                "inputs": inputs,
                "secret_inputs": secret_inputs,
                "outputs": self.resources[response.urn].state,
            }
        )
        return response


def main() -> int:
    """Run the program once with the config in argv[1]; write the record to argv[2]."""
    config_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    preview = "--preview" in sys.argv[3:]
    config: dict[str, str] = json.loads(config_path.read_text())
    monitor = RecordingMonitor(StackMocks())
    mocks.set_mocks(StackMocks(), project=PROJECT, stack="dev", preview=preview, monitor=monitor)
    secret_keys = [key for key in config if key.endswith(":kubeconfig")]
    pulumi.runtime.set_all_config(config, secret_keys)
    exports: dict[str, Any] = {}

    async def program() -> None:
        runpy.run_path(str(INFRA / "__main__.py"), run_name="__main__")
        stack = get_root_resource()
        assert isinstance(stack, Stack)
        for key, value in stack.outputs.items():
            output = pulumi.Output.from_input(value)
            exports[key] = {"value": await output.future(), "secret": await output.is_secret()}

    try:
        _sync_await(run_pulumi_func(program))
    except Exception as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 2
    out_path.write_text(json.dumps({"resources": monitor.records, "exports": exports}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
