"""A new model pod's first requests, with and without warm-up records that match the gateway's.

    python -m benchmarks.scaling.warmup [--version-dir DIR]

TF Serving runs a Predict as one `Session::Run` whose fetches are the signature's outputs named
by the request's `output_filter` (tensorflow_serving/servables/tensorflow/predict_util.cc), and
replays the SavedModel's warm-up records through the same path at load
(saved_model_warmup_util.cc). A DirectSession builds and caches one executor per distinct set
of feeds and fetches (tensorflow/core/common_runtime/direct_session.cc, GetOrCreateExecutors),
so a warm-up that fetched every output leaves the gateway's `scores`-only and
`description`-only requests to pay for their executors on a new pod's first users. No
tensorflow_model_server binary here: each case runs in a fresh process that loads the version
with TensorFlow's TF1 SavedModel loader into a DirectSession (what the C++ loader does),
replays the case's warm-up, then times the gateway's requests.

Cases: `none` (no warm-up), `all_outputs` (one record per allowed batch size, fetching every
output: the seed's warm-up), `records` (the version's own assets.extra records). Writes
build/scaling/warmup.json; docs/scaling.md quotes it (benchmarks.scaling.report).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.config import DEFAULT_MODEL_BASE, REPO, BenchError
from benchmarks.report import write_atomically
from clothing_tools.convert_model import read_warmup_requests
from clothing_tools.local_stack import newest_version

OUTPUT = REPO / "build" / "scaling" / "warmup.json"
CASES = ("none", "all_outputs", "records")
REPEATS = 20  # timed runs after the first, for the steady-state figure


def measure_case(version_dir: Path, case: str) -> dict[str, Any]:
    """In this process: load, warm up as `case` says, time the gateway's two requests."""
    import tensorflow as tf
    from gateway import contract

    tf1 = tf.compat.v1
    graph = tf.Graph()
    session = tf1.Session(graph=graph)
    with graph.as_default():
        meta = tf1.saved_model.loader.load(session, ["serve"], str(version_dir))
    signatures = meta.signature_def

    def run(signature: str, output_filter: Sequence[str], images: Any) -> float:
        sig = signatures[signature]
        names = list(output_filter) or list(sig.outputs)
        fetches = [sig.outputs[name].name for name in names]
        feed = {sig.inputs[contract.INPUT_NAME].name: images}
        began = time.perf_counter()
        session.run(fetches, feed)
        return (time.perf_counter() - began) * 1000

    records = read_warmup_requests(version_dir)
    if case == "records":
        for record in records:
            run(record.signature, record.output_filter, record.images)
    elif case == "all_outputs":
        for record in records:
            if record.signature == contract.SERVING_SIGNATURE:
                run(record.signature, [], record.images)
    one = next(r.images for r in records if r.signature == contract.SERVING_SIGNATURE)[:1]
    # what gateway/tfserving.py sends: Predict fetching scores, describe fetching description
    first_predict = run(contract.SERVING_SIGNATURE, [contract.SCORES_OUTPUT], one)
    first_describe = run(contract.DESCRIBE_SIGNATURE, [contract.DESCRIPTION_OUTPUT], one)
    steady_predict = sorted(
        run(contract.SERVING_SIGNATURE, [contract.SCORES_OUTPUT], one) for _ in range(REPEATS)
    )[REPEATS // 2]
    steady_describe = sorted(
        run(contract.DESCRIBE_SIGNATURE, [contract.DESCRIPTION_OUTPUT], one) for _ in range(REPEATS)
    )[REPEATS // 2]
    return {
        "case": case,
        "first_predict_ms": round(first_predict, 2),
        "first_describe_ms": round(first_describe, 2),
        "median_predict_ms": round(steady_predict, 2),
        "median_describe_ms": round(steady_describe, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: every case in its own process, or one case (`--case`) in this one."""
    parser = argparse.ArgumentParser(prog="warmup", description=__doc__.splitlines()[0])
    parser.add_argument("--version-dir", type=Path, default=None)
    parser.add_argument("--case", choices=CASES, default=None, help="run one case here")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    version_dir = args.version_dir or DEFAULT_MODEL_BASE / str(newest_version(DEFAULT_MODEL_BASE))
    if args.case:
        print(json.dumps(measure_case(version_dir, args.case)))
        return 0
    results = []
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for case in CASES:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.scaling.warmup", f"--version-dir={version_dir}",
             f"--case={case}"],
            cwd=REPO, capture_output=True, text=True, env=environment, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            print(f"warmup: error: case {case} failed: {done.stderr[-800:]}", file=sys.stderr)
            return 2
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m benchmarks.scaling.warmup",
        "version_dir": str(
            version_dir.relative_to(REPO) if version_dir.is_relative_to(REPO) else version_dir
        ),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cases": results,
    }
    write_atomically(args.output, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as exc:
        print(f"warmup: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
