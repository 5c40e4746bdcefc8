"""`python -m benchmarks.stages`: the gateways' CPU per request by stage at 1, 8 and 32 clients.

    python -m benchmarks.stages [--clients 1,8,32] [--duration 10] [--photos 300]
                                [--work-dir DIR] [--py-spy SECONDS] [--repeat N]
                                [--ours-env NAME=VALUE ...]

Starts the model server (batching as deployed) and the photo server as `make bench` does, then
each gateway under benchmarks/stage_cpu.py (gunicorn, 2 gthread workers x 8 threads, counters
in every worker), drives it with wrk and prints a Markdown table of CPU milliseconds per answered
request by stage, for docs/benchmarks.md. `--py-spy S` also samples ours (`--native`) for S
seconds at the highest client count. The machine's load is printed with the figures.
`--repeat N` alternates ours and the seed N times per client count and reports each figure's
median: on a shared, loaded machine one 10-second window swings by tens of per cent.
`--ours-env` sets a gateway setting for ours (e.g. GATEWAY_DOWNLOAD_KEEPALIVE_SECONDS=0), to
compare a change against the seed-style gateway with and without it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from benchmarks.config import (
    DEFAULT_DATASET,
    DEFAULT_MODEL_BASE,
    GATEWAY_DIR,
    GATEWAY_VENV,
    REPO,
    SEED_VENV,
    Model,
)
from benchmarks.context import SEED_MODEL_NAME
from benchmarks.load import bodies_file, run_wrk
from benchmarks.photos import load_photos, photo_server
from benchmarks.profiling import profile_under_load
from benchmarks.report import write_atomically
from benchmarks.stack import Gateway, _started, model_server, our_gateway
from benchmarks.twins import export_seed_twin
from clothing_tools.local_stack import free_port, http_get, wait_until_ready

PROG = "benchmarks.stages"
BEGIN = "<!-- section:gateway-cpu-by-stage -->"
END = "<!-- /section:gateway-cpu-by-stage -->"
LAUNCHER = REPO / "benchmarks" / "stage_cpu.py"
NOTES = REPO / "benchmarks" / "stages_notes.md"  # hand-written: what was changed and tried
ORDER = (
    "download",
    "decode/resize",
    "request build + answer parse",
    "gRPC call",
    "metrics",
    "logging",
    "HTTP framework (Flask/werkzeug, routing, JSON, headers)",
    "gunicorn in request threads (parse, write, keep-alive)",
    "gunicorn main loop",
    "other threads (gRPC core, watchdog, pools)",
)


def _gunicorn_args(port: int, workers: int, threads: int) -> list[str]:
    return [
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        f"--threads={threads}",
        "--worker-class=gthread",
    ]


@contextlib.contextmanager
def staged_gateway(
    which: str,
    tf_serving: str,
    out: Path,
    log: Path,
    size: int,
    workers: int = 2,
    threads: int = 8,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """One gateway under stage_cpu.py; ours with its own gunicorn.conf.py."""
    port = free_port()
    if which == "ours":
        python = GATEWAY_VENV / "bin" / "python"
        command = [str(python), str(LAUNCHER), "ours", str(out)]
        command += ["-c", str(GATEWAY_DIR / "gunicorn.conf.py"), f"--chdir={GATEWAY_DIR}"]
        command += [*_gunicorn_args(port, workers, threads), "gateway.wsgi:app"]
        env = {
            "TF_SERVING_HOST": tf_serving,
            "GATEWAY_ALLOW_PRIVATE_URLS": "true",
            # `make local` imports the gateway from its folder (cwd); the launcher is elsewhere
            "PYTHONPATH": str(GATEWAY_DIR),
            **(extra_env or {}),
        }
    else:
        python = SEED_VENV / "bin" / "python"
        command = [str(python), str(LAUNCHER), "seed", str(out), "--keep-alive=5", "--timeout=60"]
        command += _gunicorn_args(port, workers, threads)
        command += [f"--pythonpath={REPO}", "benchmarks.seed_gateway:app"]
        env = {
            "TF_SERVING_HOST": tf_serving,
            "SEED_MODEL_NAME": SEED_MODEL_NAME,
            "SEED_INPUT_SIZE": str(size),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    with _started(command, env, log) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(process, lambda: http_get(f"{url}/readyz")[0] == 200, which, 180, log)
        yield Gateway(which, url, process.pid)


def snapshot(out: Path) -> dict[str, float]:
    """Every worker's latest counters, summed into the report's categories."""
    total: dict[str, float] = {}
    for path in out.glob("*.json"):
        data = json.loads(path.read_text())
        stages: dict[str, float] = data["stages"]
        threads: dict[str, float] = data["threads"]
        for name, seconds in stages.items():
            total[name] = total.get(name, 0.0) + seconds
        in_requests = threads["request threads"] - sum(stages.values())
        key = "gunicorn in request threads (parse, write, keep-alive)"
        total[key] = total.get(key, 0.0) + in_requests
        total["gunicorn main loop"] = (
            total.get("gunicorn main loop", 0.0) + threads["gunicorn main loop"]
        )
        other = data["process"] - sum(threads.values())  # non-Python threads (gRPC core)
        other += threads["other Python threads"]
        key = "other threads (gRPC core, watchdog, pools)"
        total[key] = total.get(key, 0.0) + other
        total["process"] = total.get("process", 0.0) + data["process"]
    return total


def measure(
    gateway: Gateway, out: Path, bodies: Path, clients: int, duration: float
) -> dict[str, float]:
    """CPU ms per answered request by stage during one wrk run, plus its throughput."""
    run_wrk(f"{gateway.url}/predict", bodies, clients, 2.0)  # warm-up
    time.sleep(1.2)  # let every worker write a snapshot after the warm-up
    before = snapshot(out)
    result = run_wrk(f"{gateway.url}/predict", bodies, clients, duration, watch={"gw": gateway.pid})
    time.sleep(1.2)
    after = snapshot(out)
    if not result.requests:
        raise SystemExit(f"{PROG}: no request answered by {gateway.label}; see its log")
    per = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / result.requests * 1000 for k in after}
    per["requests/s"] = result.throughput
    per["tree CPU"] = result.cpu_per_request("gw") * 1000
    per["errors"] = float(result.errors)
    return per


def median_by_key(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over repeated runs (a stage missing from a run counts as 0)."""
    keys = {key for run in runs for key in run}
    return {key: statistics.median(run.get(key, 0.0) for run in runs) for key in keys}


def table(results: dict[str, dict[int, dict[str, float]]], clients: Sequence[int]) -> str:
    """Markdown: a row per stage, a column per gateway and client count."""
    header = ["stage (CPU ms per answered request)"]
    for c in clients:
        header += [f"ours, {c}", f"seed, {c}"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for stage in (*ORDER, "process"):
        cells = [stage if stage != "process" else "**whole worker processes**"]
        for c in clients:
            for label in ("ours", "seed"):
                value = results[label][c].get(stage)
                shown = "" if value is None or abs(value) < 0.005 else f"{value:.2f}"
                cells.append(f"**{shown}**" if stage == "process" and shown else shown)
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["ratio ours / seed (whole worker processes)"]
    for c in clients:
        ratio = results["ours"][c]["process"] / results["seed"][c]["process"]
        cells += [f"{ratio:.3f}", ""]
    lines.append("| " + " | ".join(cells) + " |")
    cells = ["throughput (req/s)"]
    for c in clients:
        cells += [f"{results[label][c]['requests/s']:.1f}" for label in ("ours", "seed")]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def floor_note(results: dict[str, dict[int, dict[str, float]]], clients: Sequence[int]) -> str:
    """How far 0.6x the seed is below what both gateways spend on their common machinery."""
    common = (
        "request build + answer parse",
        "gRPC call",
        "HTTP framework (Flask/werkzeug, routing, JSON, headers)",
        "gunicorn in request threads (parse, write, keep-alive)",
        "gunicorn main loop",
        "other threads (gRPC core, watchdog, pools)",
    )
    parts = []
    for c in clients:
        seed, ours = results["seed"][c], results["ours"][c]
        floor = sum(seed.get(k, 0.0) for k in common)
        decode = min(seed.get("decode/resize", 0.0), ours.get("decode/resize", 0.0))
        parts.append(
            f"{c} clients: 0.6x the seed is {0.6 * seed['process']:.2f} ms; the seed's own "
            f"Flask + gunicorn + gRPC machinery costs {floor:.2f} ms and the cheaper decode "
            f"{decode:.2f} ms, {floor + decode:.2f} ms before any download"
        )
    return (
        "The 0.6x target against what both gateways share (same Flask, gunicorn gthread "
        "and grpcio): " + "; ".join(parts) + "."
    )


def kept_section(document: str) -> str:
    """The stage section of an existing docs/benchmarks.md, markers included ("" if none)."""
    start, end = document.find(BEGIN), document.find(END)
    return document[start : end + len(END)] if 0 <= start < end else ""


def with_section(document: str, section: str) -> str:
    """`document` with its stage section replaced by `section` (or put before the profiles)."""
    old = kept_section(document)
    if old:
        return document.replace(old, section)
    marker = "\n## Profiles"
    at = document.find(marker)
    if at < 0:
        return document.rstrip("\n") + "\n\n" + section + "\n"
    return document[: at + 1] + section + "\n\n" + document[at + 1 :]


def section_text(body: str, command: str) -> str:
    """The Markdown section for docs/benchmarks.md."""
    return "\n".join(
        [
            BEGIN,
            "## Gateway CPU by stage",
            "",
            f"Written by `{command}` ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC); `make "
            "bench` keeps this section as it is. Each gateway runs under gunicorn (2 gthread "
            "workers x 8 threads) through benchmarks/stage_cpu.py, which wraps the functions of "
            "each stage with a thread-CPU clock (exclusive of nested stages) in every worker; "
            "wrk drives it as in B3. CPU per answered request, in ms. 'gunicorn in request "
            "threads' is the request threads' CPU outside the app (request parsing, response "
            "writing); 'other threads' is the rest of the process (gRPC's core threads, the "
            "download watchdog, lookup pools). The wrappers themselves add a few microseconds "
            "per stage to both gateways.",
            "",
            body,
            END,
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Start everything, measure each gateway at each client count, print the table."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--py-spy", type=float, default=0.0, help="seconds of py-spy at the top")
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternate ours and seed N times per client count"
    )
    parser.add_argument("--output", type=Path, help="put the table in this benchmarks document")
    parser.add_argument(
        "--ours-env", action="append", default=[], metavar="NAME=VALUE", help="a setting of ours"
    )
    args = parser.parse_args(argv)
    ours_env = dict(item.partition("=")[::2] for item in args.ours_env)
    if any(not name.startswith("GATEWAY_") for name in ours_env):
        parser.error("--ours-env takes GATEWAY_...=VALUE")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    clients = [int(c) for c in args.clients.split(",")]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="stages-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    model = Model.load(DEFAULT_MODEL_BASE)
    photos = load_photos(DEFAULT_DATASET, args.photos)
    seed_base = work / "models" / SEED_MODEL_NAME
    if not seed_base.is_dir():
        export_seed_twin(model.version_dir, seed_base, model.height, model.width)
    load_before = os.getloadavg()
    profile = ""
    results: dict[str, dict[int, dict[str, float]]] = {"ours": {}, "seed": {}}
    with contextlib.ExitStack() as running:
        photo = running.enter_context(photo_server(DEFAULT_DATASET, work / "logs" / "photos.log"))
        server = running.enter_context(
            model_server(
                [(model.name, model.base_path), (SEED_MODEL_NAME, seed_base)],
                batching=True,
                work=work,
                log=work / "logs" / "model-server.log",
            )
        )
        bodies = bodies_file(
            work / "bodies.jsonl", [{"url": f"{photo.url}/{p.relative}"} for p in photos]
        )
        gateways = {}
        for label in ("ours", "seed"):
            out = work / "counters" / label
            gateways[label] = (
                running.enter_context(
                    staged_gateway(
                        label,
                        server.grpc_target,
                        out,
                        work / "logs" / f"{label}.log",
                        model.height,
                        extra_env=ours_env if label == "ours" else None,
                    )
                ),
                out,
            )
        runs = 0
        for c in clients:
            taken: dict[str, list[dict[str, float]]] = {"ours": [], "seed": []}
            for _ in range(args.repeat):
                order = ("ours", "seed") if runs % 2 == 0 else ("seed", "ours")
                runs += 1
                for label in order:
                    gateway, out = gateways[label]
                    print(f"{PROG}: {label}, {c} clients ...", flush=True)
                    taken[label].append(measure(gateway, out, bodies, c, args.duration))
            for label, measured in taken.items():
                results[label][c] = median_by_key(measured)
        if args.py_spy > 0:
            # Sampled without the counters (their wrappers would show in the profile).
            plain = running.enter_context(
                our_gateway(server, workers=2, threads=8, log=work / "logs" / "plain.log")
            )
            profile = profile_under_load(
                plain.pid,
                server.process.pid,
                functools.partial(run_wrk, f"{plain.url}/predict", bodies, max(clients)),
                args.py_spy,
                work / "profiles" / "ours",
            )
            profile = profile.replace("### ", "#### ")
            print(profile)
    load_after = os.getloadavg()
    body = (
        table(results, clients)
        + "\n\n"
        + floor_note(results, clients)
        + "\n\nLoad average (1, 5, 15 min) of the shared machine: before "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + ", ".join(f"{x:.2f}" for x in load_after)
        + f" (2 CPUs); {args.duration:g} s per point after 2 s of warm-up"
        + (
            f", each figure the median of {args.repeat} alternating runs."
            if args.repeat > 1
            else "."
        )
        + "".join(f" Ours with {k}={v}." for k, v in ours_env.items())
    )
    if NOTES.is_file():
        body += "\n\n" + NOTES.read_text("utf-8").strip()
    if profile:
        body += (
            f"\n\n### What remains: py-spy on ours at {max(clients)} clients, "
            f"{args.py_spy:g} s\n\n{profile.strip()}"
        )
    print()
    print(body)
    print(f"\n{PROG}: work folder {work}")
    if args.output is not None:
        command = (
            f"python -m benchmarks.stages --clients {args.clients} --duration {args.duration:g}"
            f" --photos {args.photos} --py-spy {args.py_spy:g} --repeat {args.repeat}"
            + "".join(f" --ours-env {k}={v}" for k, v in ours_env.items())
        )
        document = args.output.read_text("utf-8") if args.output.exists() else ""
        write_atomically(args.output, with_section(document, section_text(body, command)))
        print(f"{PROG}: wrote its section of {args.output}")
    errors = {
        f"{k} {c}": v["errors"] for k, r in results.items() for c, v in r.items() if v["errors"]
    }
    if errors:
        print(f"failed requests: {errors}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
