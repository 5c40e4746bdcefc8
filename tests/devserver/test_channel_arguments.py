"""--grpc_channel_arguments as tensorflow_model_server reads it, and what max connection age
does for clients that balance over a DNS name (grpc/grpc issue 12295)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from devserver.cli import main, parse_channel_arguments
from devserver.server import ModelServer
from devserver.settings import ModelConfig, Settings
from gateway.settings import Settings as GatewaySettings
from gateway.tfserving import channel_options
from tensorflow_serving.apis import prediction_service_pb2_grpc

from benchmarks.scaling.dns import LoopbackDNS
from clothing_tools.local_stack import common_free_port
from tests.devserver import tiny_model
from tests.devserver.support import MODEL_NAME

NAME = "tiny-model.test"
ChannelArguments = tuple[tuple[str, int | str], ...]
AGE: ChannelArguments = (
    ("grpc.max_connection_age_ms", 1000),
    ("grpc.max_connection_age_grace_ms", 1000),
)


def test_channel_arguments_parse_as_tf_serving_does() -> None:
    parsed = parse_channel_arguments(
        "grpc.max_connection_age_ms=30000,grpc.max_connection_age_grace_ms= -5 ,"
        "grpc.primary_user_agent=tfs,grpc.big=4294967296"
    )
    # int when absl::SimpleAtoi reads an int32, otherwise the string as written
    assert parsed == (
        ("grpc.max_connection_age_ms", 30000),
        ("grpc.max_connection_age_grace_ms", -5),
        ("grpc.primary_user_agent", "tfs"),
        ("grpc.big", "4294967296"),
    )
    assert parse_channel_arguments("") == ()


@pytest.mark.parametrize("value", ["grpc.max_connection_age_ms", "a=1,,b=2", "=3", "a=1=2"])
def test_malformed_channel_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--model_base_path=/m", f"--grpc_channel_arguments={value}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected name=value in --grpc_channel_arguments" in err


@contextmanager
def _replica(
    model_base: Path, host: str, port: int, arguments: ChannelArguments
) -> Iterator[ModelServer]:
    settings = Settings(
        models=(ModelConfig(MODEL_NAME, model_base),),
        grpc_port=port,
        grpc_bind_address=host,
        rest_api_port=0,
        grpc_channel_arguments=arguments,
    )
    server = ModelServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop(grace_seconds=1)


def _calls(server: ModelServer) -> int:
    return sum(servable.calls for servable in server.manager.available())


def _shares_after_scale_out(
    model_base: Path, arguments: ChannelArguments, seconds: float
) -> list[str]:
    """Which replica served each sequential Predict after a second one joined the DNS name."""
    hosts = ("127.0.0.2", "127.0.0.3")
    port = common_free_port(hosts)
    request = tiny_model.predict_request(tiny_model.random_images(1, seed=7))
    with LoopbackDNS() as dns, _replica(model_base, hosts[0], port, arguments):
        dns.publish(NAME, [hosts[0]])
        # the gateway's own channel: round_robin over dns:///, re-resolution at most every 10 s
        options = channel_options(GatewaySettings(tf_serving_host=dns.target(NAME, port)))
        with grpc.insecure_channel(dns.target(NAME, port), options=options) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(10):
                stub.Predict(request, timeout=30)
            with _replica(model_base, hosts[1], port, arguments) as second:
                dns.publish(NAME, hosts)
                served: list[str] = []
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    before = _calls(second)
                    stub.Predict(request, timeout=30)
                    served.append("new" if _calls(second) > before else "old")
                    time.sleep(0.02)
                return served


@pytest.mark.slow
def test_max_connection_age_makes_dns_clients_reach_a_new_replica(model_base: Path) -> None:
    # age 1 s + grace 1 s, the gateway's 10 s minimum between resolutions: 16 s is ample
    served = _shares_after_scale_out(model_base, AGE, seconds=16)
    first_new = served.index("new")  # ValueError: the new replica never got a call
    after = served[first_new:]
    assert after.count("new") / len(after) >= 0.3, (first_new, len(served), after.count("new"))


@pytest.mark.slow
def test_without_max_connection_age_a_new_replica_gets_nothing(model_base: Path) -> None:
    # the failure the flag fixes: the open connection never breaks, so DNS is never re-read
    served = _shares_after_scale_out(model_base, (), seconds=12)
    assert served.count("new") == 0 and len(served) > 50
