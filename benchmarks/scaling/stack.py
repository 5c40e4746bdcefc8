"""The local multi-replica stack: model replicas behind DNS, gateway replicas behind haproxy.

Topology (all loopback; every "pod" has its own address):
- model replica i: the TF Serving-compatible devserver on 127.0.0.(2+i), started with the
  flags the Pulumi program gives tensorflow_model_server (paths mapped to the repository),
  published under one name by a DNS server on 127.0.0.1 (the headless Service);
- gateway replica j: gunicorn with the production settings on 127.0.1.(1+j), TF_SERVING_HOST
  `dns://127.0.0.1:PORT/name:GRPC_PORT` (round_robin, as the program sets it);
- haproxy on 127.0.0.1 in TCP mode (the NLB: balances connections, health-checks /readyz,
  never retries a request), backends switched on and off through its runtime API.
Drain sequences are production's: a model replica leaves DNS, waits the program's preStop,
then gets SIGTERM (which ends it at once, as TF Serving); a gateway replica leaves haproxy,
waits, then gets SIGTERM (gunicorn finishes requests in flight).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.config import DEFAULT_MODEL_BASE, GATEWAY_DIR, GATEWAY_VENV, REPO, BenchError
from benchmarks.scaling.declared import Declared
from benchmarks.scaling.dns import LoopbackDNS
from clothing_tools.local_stack import common_free_port

MODEL_DIR = REPO / "services" / "model"
DEVSERVER_DIR = REPO / "services" / "devserver"
SERVICE_NAME = "tf-serving-headless.scaling.test"
MAX_SLOTS = 8
GATEWAY_LOCAL_PRE_STOP = 2.0  # haproxy stops new connections at once; the NLB needs 20 s


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as err:
        return int(err.code), b""
    except OSError:
        return 0, b""


@dataclass
class Replica:
    """One pod: its process, address and lifecycle state."""

    tier: str
    name: str
    address: str
    process: subprocess.Popen[bytes]
    started_at: float
    ready_at: float | None = None
    draining_at: float | None = None
    stopped_at: float | None = None
    cpu_mark: tuple[float, float] = (0.0, 0.0)  # (time, cpu seconds) at the last HPA sync

    @property
    def state(self) -> str:
        """starting, ready, draining or stopped."""
        if self.stopped_at is not None:
            return "stopped"
        if self.draining_at is not None:
            return "draining"
        return "ready" if self.ready_at is not None else "starting"

    def cpu_seconds(self) -> float:
        """User + system CPU of the process tree (what cAdvisor reads from the pod's cgroup)."""
        total = 0.0
        try:
            root = psutil.Process(self.process.pid)
            for member in [root, *root.children(recursive=True)]:
                try:
                    times = member.cpu_times()
                    total += times.user + times.system
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            pass
        return total


@dataclass
class Sample:
    """One scrape of one replica's /metrics."""

    t: float
    tier: str
    replica: str
    values: dict[str, float]


@dataclass
class Stack:
    """Every process of the local topology and the operations the scenarios use."""

    declared: Declared
    work: Path
    image_url: str
    gateway_metrics_port: int | None = None
    channel_arguments: str | None = None
    # the image's --model_config_file for replicas started from now on (a rollout changes it);
    # None: the repository's model by --model_base_path
    model_config: Path | None = None
    # the model pods' preStop sleep instead of the declared one (the smoke's short connection
    # age lets gateways leave a pod sooner); None: as declared
    model_pre_stop: float | None = None
    log: list[tuple[float, str]] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    counts: list[tuple[float, str, int, int]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.t0 = time.monotonic()
        self.work.mkdir(parents=True, exist_ok=True)
        self.model_hosts = [f"127.0.0.{2 + i}" for i in range(MAX_SLOTS)]
        self.gateway_hosts = [f"127.0.1.{1 + i}" for i in range(MAX_SLOTS)]
        self.grpc_port = common_free_port(self.model_hosts)
        self.rest_port = common_free_port(self.model_hosts)
        self.gateway_port = common_free_port(self.gateway_hosts)
        self.metrics_port = self.gateway_metrics_port or common_free_port(self.gateway_hosts)
        self.dropped_flags: set[str] = set()
        self.dns = LoopbackDNS().start()
        self.dns.publish(SERVICE_NAME, [])
        self.lb_port = common_free_port(["127.0.0.1"])
        self._haproxy: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._serial = {"model": 0, "gateway": 0}

    # -- time and events ------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the stack was created."""
        return time.monotonic() - self.t0

    def note(self, text: str) -> None:
        """Record an event for the report's timelines."""
        with self.lock:
            self.log.append((self.now(), text))
        print(f"[{self.now():7.1f}s] {text}", flush=True)

    @property
    def lb_url(self) -> str:
        """The load balancer's base URL."""
        return f"http://127.0.0.1:{self.lb_port}"

    def tier(self, tier: str, states: tuple[str, ...] = ("ready",)) -> list[Replica]:
        """Replicas of a tier in the given states."""
        with self.lock:
            return [r for r in self.replicas if r.tier == tier and r.state in states]

    # -- haproxy (the NLB) -----------------------------------------------------------------
    def start_balancer(self) -> None:
        """haproxy in TCP mode with one disabled slot per possible gateway replica."""
        socket_path = self.work / "haproxy.sock"
        servers = "\n".join(
            f"    server gw{i} {host}:{self.gateway_port} check inter 1s fall 2 rise 1 disabled"
            for i, host in enumerate(self.gateway_hosts)
        )
        config = self.work / "haproxy.cfg"
        config.write_text(
            f"""global
    maxconn 4000
    stats socket {socket_path} mode 600 level admin
defaults
    mode tcp
    timeout connect 3s
    timeout client 60s
    timeout server 60s
frontend nlb
    bind 127.0.0.1:{self.lb_port}
    default_backend gateways
backend gateways
    balance roundrobin
    option httpchk GET /readyz
{servers}
"""
        )
        haproxy = "/usr/sbin/haproxy"
        if not Path(haproxy).exists():
            raise BenchError("haproxy is not installed; run `make scale-env`")
        out = (self.work / "haproxy.log").open("ab")
        self._haproxy = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if time.monotonic() > deadline or self._haproxy.poll() is not None:
                raise BenchError(f"haproxy did not start (see {self.work / 'haproxy.log'})")
            time.sleep(0.05)

    def haproxy_command(self, command: str) -> str:
        """One command on haproxy's runtime API."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(self.work / "haproxy.sock"))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    # -- replicas --------------------------------------------------------------------------
    def _model_command(self, host: str) -> list[str]:
        """The program's TF Serving flags, for the devserver on `host`.

        Ports, the models (`model_config`, else the repository's model) and channel arguments
        are the harness's; the image's /etc/tfserving files are the repository's
        services/model files; flags the devserver does not know are left out and listed in
        `dropped_flags` for the report.
        """
        from devserver.cli import build_parser

        known = {o for action in build_parser()._actions for o in action.option_strings}
        own = {"--port", "--rest_api_port", "--model_base_path", "--grpc_channel_arguments",
               "--model_config_file"}  # fmt: skip
        model_name = self.declared.gateway.env.get("GATEWAY_MODEL_NAME", "clothing-model")
        flags = []
        for arg in self.declared.model.args:
            name = arg.split("=", 1)[0]
            if name in own:
                continue
            if name not in known:
                self.dropped_flags.add(name)
                continue
            flags.append(arg.replace("/etc/tfserving/", f"{MODEL_DIR}/"))
        channel = self.channel_arguments or self.declared.channel_arguments
        models = (
            [f"--model_config_file={self.model_config}"]
            if self.model_config is not None
            else [f"--model_name={model_name}", f"--model_base_path={DEFAULT_MODEL_BASE}"]
        )
        return [
            sys.executable, "-m", "devserver", f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}", *models, f"--grpc_channel_arguments={channel}",
            *flags, f"--grpc_bind_address={host}", f"--rest_api_bind_address={host}",
            "--log_level=warning",
        ]  # fmt: skip

    def _free_slot(self, tier: str) -> str:
        hosts = self.model_hosts if tier == "model" else self.gateway_hosts
        with self.lock:
            used = {r.address for r in self.replicas if r.tier == tier and r.state != "stopped"}
        for host in hosts:
            if host not in used:
                return host
        raise BenchError(f"no free {tier} slot (at most {MAX_SLOTS})")

    def add(self, tier: str) -> Replica:
        """Start a replica; a watcher thread marks it ready and publishes it (DNS / haproxy)."""
        host = self._free_slot(tier)
        with self.lock:
            self._serial[tier] += 1
            name = f"{tier}-{self._serial[tier]}"
        log = (self.work / f"{name}.log").open("ab")
        environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if tier == "model":
            environment.update({"PYTHONPATH": str(DEVSERVER_DIR), "TF_CPP_MIN_LOG_LEVEL": "2"})
            command, cwd = self._model_command(host), REPO
        else:
            metrics_dir = tempfile.mkdtemp(prefix=f"{name}-metrics-", dir=self.work)
            environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
            environment.update(self.declared.gateway.env)
            environment.update(
                {
                    "TF_SERVING_HOST": self.dns.target(SERVICE_NAME, self.grpc_port),
                    "GATEWAY_BIND": f"{host}:{self.gateway_port}",
                    # metrics on their own port, served by the gunicorn master
                    "GATEWAY_METRICS_BIND": f"{host}:{self.metrics_port}",
                    "GATEWAY_ALLOW_PRIVATE_URLS": "true",  # the image host is on loopback
                    "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
                }
            )
            command = [str(GATEWAY_VENV / "bin" / "python"), "-m", "gunicorn", "-c",
                       "gunicorn.conf.py", "gateway.wsgi:app"]  # fmt: skip
            cwd = GATEWAY_DIR
        process = subprocess.Popen(
            command, cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        replica = Replica(tier, name, host, process, self.now())
        with self.lock:
            self.replicas.append(replica)
        self.note(f"{name} starting on {host}")
        threading.Thread(target=self._await_ready, args=(replica,), daemon=True).start()
        return replica

    def _ready_url(self, replica: Replica) -> str:
        if replica.tier == "model":
            model = self.declared.model.flag("model_name") or "clothing-model"
            return f"http://{replica.address}:{self.rest_port}/v1/models/{model}/metadata"
        return f"http://{replica.address}:{self.gateway_port}/readyz"

    def _await_ready(self, replica: Replica) -> None:
        url = self._ready_url(replica)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and replica.process.poll() is None:
            if _get(url)[0] == 200:
                replica.ready_at = self.now()
                replica.cpu_mark = (time.monotonic(), replica.cpu_seconds())
                self._publish(replica)
                self.note(f"{replica.name} ready")
                return
            time.sleep(0.25)
        self.note(f"{replica.name} never became ready (exit {replica.process.poll()})")
        replica.stopped_at = self.now()

    def _publish(self, replica: Replica) -> None:
        self._route(replica, "ready")

    def _unpublish(self, replica: Replica) -> None:
        self._route(replica, "maint")

    def _route(self, replica: Replica, gateway_state: str) -> None:
        """Model tier: DNS answers the ready replicas; gateway tier: haproxy's server state."""
        if replica.tier == "model":
            with self.lock:
                hosts = [
                    r.address for r in self.replicas if r.tier == "model" and r.state == "ready"
                ]
            self.dns.publish(SERVICE_NAME, hosts)
        else:
            slot = self.gateway_hosts.index(replica.address)
            self.haproxy_command(f"set server gateways/gw{slot} state {gateway_state}")

    def wait_ready(self, replicas: list[Replica], timeout: float = 300) -> None:
        """Block until every replica is ready."""
        deadline = time.monotonic() + timeout
        while any(r.ready_at is None for r in replicas):
            if time.monotonic() > deadline or any(r.stopped_at is not None for r in replicas):
                raise BenchError(f"replicas did not become ready: {[r.name for r in replicas]}")
            time.sleep(0.2)

    def drain(self, replica: Replica, wait: bool = True) -> threading.Thread:
        """Production's stop: out of DNS / the balancer, the preStop wait, then SIGTERM."""
        replica.draining_at = self.now()
        self._unpublish(replica)
        pre_stop = (
            self.model_pre_stop or self.declared.model.pre_stop_seconds
            if replica.tier == "model"
            else GATEWAY_LOCAL_PRE_STOP
        )
        self.note(f"{replica.name} draining (preStop {pre_stop:.0f} s)")

        def finish() -> None:
            time.sleep(pre_stop)
            replica.process.send_signal(signal.SIGTERM)
            grace = (
                self.declared.model.termination_grace_seconds
                if replica.tier == "model"
                else self.declared.gateway.termination_grace_seconds
            ) - pre_stop
            try:
                replica.process.wait(max(grace, 1))
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
            replica.stopped_at = self.now()
            self.note(f"{replica.name} stopped (exit {replica.process.returncode})")

        thread = threading.Thread(target=finish, daemon=True)
        thread.start()
        if wait:
            thread.join()
        return thread

    def kill(self, replica: Replica) -> None:
        """kill -9: no drain at all; DNS / the balancer's health check notice later."""
        replica.process.kill()
        replica.process.wait()
        replica.stopped_at = self.now()
        self.note(f"{replica.name} killed (SIGKILL)")
        if replica.tier == "model":
            # the endpoints controller removes a dead pod from the headless Service
            threading.Timer(5.0, self._unpublish, args=(replica,)).start()
        else:
            threading.Timer(5.0, self._unpublish, args=(replica,)).start()

    # -- metrics ---------------------------------------------------------------------------
    def _metrics_url(self, replica: Replica) -> str:
        if replica.tier == "model":
            return f"http://{replica.address}:{self.rest_port}/monitoring/prometheus/metrics"
        return f"http://{replica.address}:{self.metrics_port}/metrics"

    def scrape_once(self) -> None:
        """Read every live replica's /metrics (Prometheus text) into samples."""
        for replica in self.tier("model", ("ready", "draining")) + self.tier(
            "gateway", ("ready", "draining")
        ):
            status, body = _get(self._metrics_url(replica), timeout=1.0)
            if status != 200:
                continue
            values: dict[str, float] = {}
            for family in text_string_to_metric_families(body.decode()):
                for sample in family.samples:
                    # the parser names a counter's sample <name>_total
                    if sample.name.startswith(":tensorflow:serving:request_count"):
                        key = f"predict_{sample.labels.get('status', '')}"
                        values[key] = values.get(key, 0.0) + sample.value
                    elif sample.name in ("gateway_requests_total", "gateway_requests"):
                        key = f"http_{sample.labels.get('status', '')}"
                        values[key] = values.get(key, 0.0) + sample.value
            with self.lock:
                self.samples.append(Sample(self.now(), replica.tier, replica.name, values))

    def count_replicas(self) -> None:
        """Record how many replicas of each tier are ready and how many are starting."""
        with self.lock:
            for tier in ("model", "gateway"):
                ready = len([r for r in self.replicas if r.tier == tier and r.state == "ready"])
                starting = len(
                    [r for r in self.replicas if r.tier == tier and r.state == "starting"]
                )
                self.counts.append((self.now(), tier, ready, starting))

    def start_scraper(self, interval: float = 1.0) -> None:
        """Scrape every `interval` seconds in a thread (Prometheus' job, done directly)."""

        def loop() -> None:
            while not self._stop.wait(interval):
                self.count_replicas()
                self.scrape_once()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self._threads.append(thread)

    def utilization(self, replica: Replica, request_cpu: float) -> float:
        """CPU use since the last call, in percent of the pod's CPU request."""
        now, cpu = time.monotonic(), replica.cpu_seconds()
        last_t, last_cpu = replica.cpu_mark
        replica.cpu_mark = (now, cpu)
        if now <= last_t:
            return 0.0
        return (cpu - last_cpu) / (now - last_t) / request_cpu * 100

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop everything this stack started."""
        self._stop.set()
        with self.lock:
            live = [r for r in self.replicas if r.process.poll() is None]
        for replica in live:
            replica.process.send_signal(signal.SIGTERM)
        for replica in live:
            try:
                replica.process.wait(30)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
        if self._haproxy is not None:
            self._haproxy.terminate()
            self._haproxy.wait(10)
        self.dns.stop()


def stack_iterator(stack: Stack) -> Iterator[Stack]:
    """Close the stack whatever happens."""
    try:
        yield stack
    finally:
        stack.close()
