"""Run this Pulumi program under Pulumi's mocks and return what it declares, as plain data.

Nothing reaches AWS or Kubernetes: Pulumi's public testing API (pulumi.runtime.set_mocks and
pulumi.runtime.test) answers every resource with its own inputs plus the few outputs the
program reads (a load balancer's hostname, an image digest...). Each run is a fresh
interpreter (`python -m clothing_infra.declared`), as the Pulumi runtime is process-global.

    from clothing_infra.declared import declare, dev_config
    stack = declare(dev_config())
    stack.k8s("HorizontalPodAutoscaler", "gateway")["spec"]["behavior"]
"""

from __future__ import annotations

import hashlib
import json
import logging
import runpy
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import yaml
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks
from pulumi.runtime.proto import resource_pb2

from clothing_infra.settings import PROJECT, REPO_ROOT, SECRET_KEYS

INFRA = REPO_ROOT / "infra"
ACCOUNT = "123456789012"
ZONES = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
DEPLOYER_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/session"
# Pulumi's wire encoding of a secret value: {SIG_KEY: SECRET_SIG, "value": ...}
# (the language host protocol's "special signature" for secrets).
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 - a marker, not a secret


class ProgramError(Exception):
    """The program stopped (e.g. a config key's check); the message is its output."""


@dataclass
class Declared:
    """What one run of the program declared: every resource, the exports, the warnings."""

    resources: list[dict[str, Any]]
    exports: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        """Registrations of one Pulumi type token."""
        return [r for r in self.resources if r["type"] == resource_type]

    def one(self, resource_type: str, name: str | None = None) -> dict[str, Any]:
        """The single registration of a type (and name)."""
        found = [r for r in self.of_type(resource_type) if name is None or r["name"] == name]
        if len(found) != 1:
            raise LookupError(f"{resource_type} {name}: {[r['name'] for r in found]}")
        return found[0]

    def by_urn(self, urn: str) -> dict[str, Any]:
        """The registration with this URN."""
        return next(r for r in self.resources if r["urn"] == urn)

    def kubernetes_objects(self) -> list[dict[str, Any]]:
        """Every Kubernetes object declared, as the manifest the provider would apply."""
        return [
            r["inputs"]
            for r in self.resources
            if r["type"].startswith("kubernetes:") and r["custom"]
        ]

    def k8s(self, kind: str, name: str) -> dict[str, Any]:
        """One Kubernetes object by kind and metadata.name."""
        found = [
            o
            for o in self.kubernetes_objects()
            if o["kind"] == kind and o["metadata"]["name"] == name
        ]
        if len(found) != 1:
            raise LookupError(f"{kind}/{name}: {len(found)} found")
        return found[0]

    def export(self, key: str) -> Any:
        """A stack output's value."""
        return self.exports[key]["value"]


def dev_config(**overrides: str) -> dict[str, str]:
    """Pulumi.dev.yaml's config as `pulumi` hands it to the program, with keys overridden."""
    document = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())
    config = {key: str(value) for key, value in document["config"].items()}
    config.update({f"{PROJECT}:{key}": value for key, value in overrides.items()})
    return config


def start(
    config: Mapping[str, str], *, preview: bool = False, plain_keys: Sequence[str] = ()
) -> subprocess.Popen[str]:
    """Start a run of the program under mocks in a fresh interpreter; see finish().

    Keys that must be secret are passed as secrets, as `pulumi config set --secret` would
    store them, except those in plain_keys.
    """
    secret_keys = [
        key
        for key in config
        if key.removeprefix(f"{PROJECT}:") in SECRET_KEYS and key not in plain_keys
    ]
    command = [sys.executable, "-m", "clothing_infra.declared"]
    if preview:
        command.append("--preview")
    process = subprocess.Popen(
        command,
        cwd=INFRA,  # as `pulumi` runs `main: infra/`
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps({"config": dict(config), "secret_keys": secret_keys}))
    process.stdin.close()
    process.stdin = None  # sent in full; communicate() then only reads
    return process


def finish(process: subprocess.Popen[str], timeout: float = 300) -> Declared:
    """Wait for a run started by start(); ProgramError when the program failed."""
    stdout, stderr = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise ProgramError(stderr.strip())
    data = json.loads(stdout)
    return Declared(data["resources"], data["exports"], data["warnings"])


def declare(config: Mapping[str, str] | None = None, *, preview: bool = False) -> Declared:
    """Run the program under mocks with this config (default: the dev stack's)."""
    return finish(start(dev_config() if config is None else config, preview=preview))


def kubernetes_objects(config: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The Kubernetes objects the program declares (default: the dev stack's config)."""
    return declare(config).kubernetes_objects()


# --- inside the run ------------------------------------------------------------------------


def _kubeconfig(cluster_name: str) -> str:
    # The shape pulumi-eks generates (nodejs/eks/cluster/cluster.ts, generateKubeconfig).
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubernetes",
                    "cluster": {
                        "server": "https://example.eks.invalid",
                        "certificate-authority-data": "Cg==",
                    },
                }
            ],
            "contexts": [{"name": "aws", "context": {"cluster": "kubernetes", "user": "aws"}}],
            "current-context": "aws",
            "users": [
                {
                    "name": "aws",
                    "user": {
                        "exec": {
                            "command": "aws",
                            "args": ["eks", "get-token", "--cluster-name", cluster_name],
                        }
                    },
                }
            ],
        }
    )


def _unwrap_secrets(value: Any, path: str, secrets: list[str]) -> Any:
    """Replace secret envelopes by their values, noting where they were."""
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            secrets.append(path)
            return _unwrap_secrets(value["value"], path, secrets)
        return {k: _unwrap_secrets(v, f"{path}.{k}".lstrip("."), secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        # The wire format carries numbers as floats; put whole numbers back as int.
        return int(value)
    return value


class StackMocks(Mocks):
    """Provider answers: echo inputs back, plus the outputs AWS or Kubernetes would add."""

    def __init__(self) -> None:
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        with self.lock:
            self.inputs[(args.typ, args.name)] = args.inputs
        outputs = dict(args.inputs)
        if args.custom and "name" not in outputs:
            outputs["name"] = f"{args.name}-4f3c2a1"  # what auto-naming would add
        if args.typ == "eks:index:Cluster":
            outputs["kubeconfigJson"] = _kubeconfig(args.inputs.get("name", args.name))
            outputs["kubeconfig"] = json.loads(outputs["kubeconfigJson"])
        elif args.typ == "aws:ecr/repository:Repository":
            name = args.inputs["name"]
            outputs["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/{name}"
            outputs["registryId"] = ACCOUNT
            outputs["arn"] = f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/{name}"
        elif args.typ == "docker-build:index:Image":
            encoded = json.dumps(args.inputs, sort_keys=True, default=str).encode()
            outputs["digest"] = f"sha256:{hashlib.sha256(encoded).hexdigest()}"
            outputs["ref"] = f"{args.inputs['tags'][0]}@{outputs['digest']}"
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
        return f"{args.name}-id", outputs

    def call(self, args: MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        function = args.token  # a function's type token, not a credential
        if function == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": ZONES, "zoneIds": ["euw1-az1", "euw1-az2", "euw1-az3"]}
        if function == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "userName": "AWS",
                "password": "mock-ecr-token",
                "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com",
                "authorizationToken": "QVdTOm1vY2s=",
            }
        if function == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": DEPLOYER_ARN, "userId": "AROAEXAMPLE:session"}
        return {}


class RecordingMonitor(MockMonitor):
    """The mock monitor, also noting each registration's graph edges and options.

    It answers that resource references are not supported, as an engine may: references
    (pulumi-eks's Cluster passed to its node groups) then arrive as URNs, which the record
    can hold, instead of resource objects deserialized on the monitor's thread.
    """

    def __init__(self, mocks: StackMocks) -> None:
        super().__init__(mocks)
        self.stack_mocks = mocks
        self.records: list[dict[str, Any]] = []

    def SupportsFeature(self, request: Any) -> Any:
        if request.id == "resourceReferences":
            return type("SupportsFeatureResponse", (), {"hasSupport": False})
        return super().SupportsFeature(request)

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
        with self.stack_mocks.lock:
            raw = self.stack_mocks.inputs.pop((request.type, request.name))
        secret_inputs: list[str] = []
        timeouts = request.customTimeouts
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
                "custom_timeouts": {
                    "create": timeouts.create,
                    "update": timeouts.update,
                    "delete": timeouts.delete,
                },
                "inputs": _unwrap_secrets(raw, "", secret_inputs),
                "secret_inputs": secret_inputs,
                "outputs": _unwrap_secrets(self.resources[response.urn].state, "", []),
            }
        )
        return response


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _run(config: Mapping[str, str], secret_keys: list[str], preview: bool) -> dict[str, Any]:
    """Run infra/__main__.py once under mocks; what it declared as JSON-ready data."""
    mocks = StackMocks()
    monitor = RecordingMonitor(mocks)
    logger = logging.getLogger("clothing_infra.declared")
    warnings = _Warnings()
    logger.addHandler(warnings)
    logger.propagate = False
    pulumi.runtime.set_mocks(
        mocks, project=PROJECT, stack="dev", preview=preview, logger=logger, monitor=monitor
    )
    pulumi.runtime.set_all_config(dict(config), secret_keys)
    exports: dict[str, Any] = {}

    async def collect(outputs: Mapping[str, Any]) -> None:
        for key, value in outputs.items():
            output = pulumi.Output.from_input(value)
            secrets: list[str] = []
            exports[key] = {
                "value": _unwrap_secrets(await output.future(), "", secrets),
                "secret": await output.is_secret(),
            }

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        namespace = runpy.run_path(str(INFRA / "__main__.py"), run_name="__main__")
        return pulumi.Output.from_input(collect(namespace["stack_outputs"]))

    program()
    return {"resources": monitor.records, "exports": exports, "warnings": warnings.messages}


def main() -> int:
    """`python -m clothing_infra.declared [--preview]`: config on stdin, record on stdout."""
    request = json.loads(sys.stdin.read())
    try:
        record = _run(
            request["config"], request["secret_keys"], preview="--preview" in sys.argv[1:]
        )
    except Exception as error:  # the program's own message, e.g. a config key's check
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 2
    json.dump(record, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
