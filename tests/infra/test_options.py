"""Optional features under the mocks (HTTPS, API keys, scraping, canary) and TF Serving's flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clothing_infra.declared import Declared
from clothing_infra.model_serving import model_server_config, tf_serving_args
from devserver.config_files import parse_model_config
from devserver.settings import VersionPolicy
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tests.infra.support import API_KEYS, CERTIFICATE, INFRA, REPO_ROOT, containers

FLAGS_FILE = Path(__file__).with_name("tf_serving_flags.txt")
NLB = "service.beta.kubernetes.io/aws-load-balancer-"


def _tf_serving_flags() -> set[str]:
    lines = FLAGS_FILE.read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def _flag_names(args: list[str]) -> list[str]:
    assert all(arg.startswith("--") for arg in args), args
    return [arg[2:].split("=", 1)[0] for arg in args]


# --- TF Serving's flags ---------------------------------------------------------------------


def test_the_flag_list_is_tf_servings_own() -> None:
    header = FLAGS_FILE.read_text()
    assert "tensorflow_serving/model_servers/main.cc at commit 9d981c5c" in header
    flags = _tf_serving_flags()
    assert len(flags) > 40
    assert {"port", "model_config_file", "grpc_channel_arguments"} <= flags


@pytest.mark.parametrize("variant", ["default", "gpu", "existing", "options"])
def test_every_flag_the_program_passes_is_a_tf_serving_flag(
    stacks: dict[str, Declared], variant: str
) -> None:
    # TF Serving only prints "unknown argument" for a flag it lacks, then runs without it.
    (container,) = containers(stacks[variant].k8s("Deployment", "tf-serving"))
    names = _flag_names(container["args"])
    assert set(names) <= _tf_serving_flags(), set(names) - _tf_serving_flags()
    assert len(names) == len(set(names))


def test_the_image_default_flags_are_tf_serving_flags() -> None:
    dockerfile = (REPO_ROOT / "services" / "model" / "Dockerfile").read_text()
    cmd = json.loads(dockerfile.split("\nCMD ", 1)[1].replace("\\\n", ""))
    assert set(_flag_names(cmd)) <= _tf_serving_flags()


def test_a_misspelt_flag_would_be_caught() -> None:
    assert not set(_flag_names([*tf_serving_args(2), "--enable_bactching"])) <= _tf_serving_flags()


# --- HTTPS ----------------------------------------------------------------------------------


def test_a_certificate_turns_the_nlb_into_https_on_443_only(options_stack: Declared) -> None:
    service = options_stack.k8s("Service", "gateway")
    annotations = service["metadata"]["annotations"]
    assert annotations[f"{NLB}ssl-cert"] == CERTIFICATE
    assert annotations[f"{NLB}ssl-ports"] == "443"
    assert annotations[f"{NLB}backend-protocol"] == "tcp"
    assert annotations[f"{NLB}type"] == "nlb"
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "http", "protocol": "TCP"}
    ]
    assert options_stack.export("gateway_url").startswith("https://")
    assert options_stack.export("gateway_url").endswith(".elb.eu-west-1.amazonaws.com/predict")


def test_without_a_certificate_there_is_no_tls_annotation(default_stack: Declared) -> None:
    annotations = default_stack.k8s("Service", "gateway")["metadata"]["annotations"]
    assert not [key for key in annotations if "ssl" in key or "backend-protocol" in key]
    assert default_stack.export("gateway_url").startswith("http://")


# --- API keys -------------------------------------------------------------------------------


def test_api_keys_reach_the_gateway_as_a_mounted_secret_file(options_stack: Declared) -> None:
    secret = options_stack.one("kubernetes:core/v1:Secret", "gateway-api-keys")
    assert secret["inputs"]["stringData"] == {"keys": "".join(f"{key}\n" for key in API_KEYS)}
    assert secret["secret_inputs"] == ["stringData"]
    deployment = options_stack.k8s("Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GATEWAY_API_KEYS_FILE"] == "/etc/gateway/api-keys/keys"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "api-keys"]
    assert mount == {"name": "api-keys", "mountPath": "/etc/gateway/api-keys", "readOnly": True}
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"] == {
        "secretName": secret["inputs"]["metadata"]["name"],
        "items": [{"key": "keys", "path": "keys"}],
        "defaultMode": 0o440,
    }
    # Readable through the group the gateway runs with.
    assert pod["securityContext"]["fsGroup"] == container["securityContext"]["runAsGroup"]


def test_api_keys_appear_nowhere_but_in_the_secret(options_stack: Declared) -> None:
    for resource in options_stack.resources:
        if resource["name"] == "gateway-api-keys":
            continue
        text = json.dumps(resource["inputs"])
        for key in API_KEYS:
            assert key not in text, resource["name"]
    assert not any(key in json.dumps(options_stack.exports) for key in API_KEYS)


def test_no_keys_no_secret_and_no_keys_file(default_stack: Declared) -> None:
    assert not default_stack.of_type("kubernetes:core/v1:Secret")
    (container,) = containers(default_stack.k8s("Deployment", "gateway"))
    assert "GATEWAY_API_KEYS_FILE" not in {e["name"] for e in container["env"]}


def test_api_keys_must_be_stored_as_a_secret(tmp_path: Path) -> None:
    from clothing_infra.declared import ProgramError, dev_config, finish, start

    from tests.infra.support import write_model_layout

    model = write_model_layout(tmp_path / "model")
    config = dev_config(model_path=str(model), api_keys=json.dumps(API_KEYS))
    process = start(config, preview=True, plain_keys=["clothing-serving:api_keys"])
    with pytest.raises(ProgramError) as caught:
        finish(process)
    assert "config key 'clothing-serving:api_keys' must be stored encrypted" in str(caught.value)
    assert API_KEYS[0] not in str(caught.value)


# --- scraping -------------------------------------------------------------------------------


def test_pod_monitors_scrape_the_metrics_ports(options_stack: Declared) -> None:
    monitors = {
        o["metadata"]["name"]: o
        for o in options_stack.kubernetes_objects()
        if o["kind"] == "PodMonitor"
    }
    assert set(monitors) == {"gateway", "tf-serving"}
    for name, port, path in (
        ("gateway", "metrics", "/metrics"),
        ("tf-serving", "http", "/monitoring/prometheus/metrics"),
    ):
        monitor = monitors[name]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"]) == (port, path)
        (container,) = containers(options_stack.k8s("Deployment", name))
        assert port in {p["name"] for p in container["ports"]}
        labels = options_stack.k8s("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


# --- canary ---------------------------------------------------------------------------------


def test_the_model_image_carries_stable_and_canary_with_their_labels(
    options_stack: Declared, model_dir: Path, canary_dir: Path
) -> None:
    image = options_stack.one("docker-build:index:Image", "images-model")["inputs"]
    named = image["context"]["named"]
    assert (INFRA / named["model"]["location"]).resolve() == model_dir.resolve()
    assert (INFRA / named["canary"]["location"]).resolve() == canary_dir.resolve()
    config = image["buildArgs"]["MODEL_CONFIG"]
    assert config == model_server_config("clothing-model", 1, 3)
    # TF Serving's own message type parses it...
    message = text_format.Parse(config, model_server_config_pb2.ModelServerConfig())
    (model,) = message.model_config_list.config
    assert (model.name, model.base_path) == ("clothing-model", "/models/clothing-model")
    assert list(model.model_version_policy.specific.versions) == [1, 3]
    assert dict(model.version_labels) == {"stable": 1, "canary": 3}
    # ...and the development server reads it the same way.
    (served,) = parse_model_config(config, "models.config")
    assert served.policy == VersionPolicy(kind="specific", versions=(1, 3))
    assert dict(served.version_labels) == {"stable": 1, "canary": 3}


def test_without_a_canary_both_labels_name_the_stable_version(default_stack: Declared) -> None:
    image = default_stack.one("docker-build:index:Image", "images-model")["inputs"]
    message = text_format.Parse(
        image["buildArgs"]["MODEL_CONFIG"], model_server_config_pb2.ModelServerConfig()
    )
    (model,) = message.model_config_list.config
    assert list(model.model_version_policy.specific.versions) == [1]
    # A gateway still sending a share to `canary` mid-promotion gets answers from every pod.
    assert dict(model.version_labels) == {"stable": 1, "canary": 1}


def test_the_gateway_gets_the_canary_and_shadow_shares(
    options_stack: Declared, default_stack: Declared
) -> None:
    for stack, canary in ((options_stack, "10"), (default_stack, "0")):
        (container,) = containers(stack.k8s("Deployment", "gateway"))
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert (env["GATEWAY_CANARY_PERCENT"], env["GATEWAY_SHADOW_PERCENT"]) == (canary, "0")


def test_a_canary_changes_the_model_image_tag(
    options_stack: Declared, default_stack: Declared
) -> None:
    tags = [
        stack.one("docker-build:index:Image", "images-model")["inputs"]["tags"]
        for stack in (default_stack, options_stack)
    ]
    assert tags[0] != tags[1]


# --- credentials, API endpoint, GPU label ---------------------------------------------------


def test_the_aws_profile_goes_into_the_kubeconfig(options_stack: Declared) -> None:
    cluster = options_stack.one("eks:index:Cluster")["inputs"]
    assert cluster["providerCredentialOpts"] == {"profileName": "deployer-profile"}


def test_an_open_api_endpoint_warns_at_preview(
    default_stack: Declared, options_stack: Declared
) -> None:
    (warning,) = default_stack.warnings
    assert "config key 'clothing-serving:api_public_access_cidrs'" in warning
    assert options_stack.warnings == []
    assert options_stack.one("eks:index:Cluster")["inputs"]["publicAccessCidrs"] == [
        "203.0.113.7/32"
    ]


def test_gpu_nodes_carry_the_autoscalers_accelerator_label(gpu_stack: Declared) -> None:
    labels = gpu_stack.one("eks:index:ManagedNodeGroup", "cluster-model")["inputs"]["labels"]
    assert labels["k8s.amazonaws.com/accelerator"] == "nvidia-tesla-t4"
    gateway = gpu_stack.one("eks:index:ManagedNodeGroup", "cluster-gateway")["inputs"]["labels"]
    assert "k8s.amazonaws.com/accelerator" not in gateway
