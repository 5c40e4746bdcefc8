"""`python -m benchmarks.scaling --smoke`: the real multi-replica stack on loopback, briefly.

Two gateway replicas behind haproxy, a model tier scaled out from one replica under load
(with a 3 s max connection age so the short run can show the share moving, and a model preStop
of 15 s to match it), a promotion to a version whose classes are in another order (every
answer checked against its own version's class for the photo), then one model and one gateway
replica drained under load: no request may fail, none may be mislabelled.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT


@pytest.mark.slow
def test_scale_out_promotion_and_scale_in_under_load_lose_or_mislabel_no_request(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.scaling", "--smoke", "--rate=8",
            "--channel-arguments=grpc.max_connection_age_ms=3000,"
            "grpc.max_connection_age_grace_ms=1000", "--model-pre-stop=15",
            f"--output={tmp_path}",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "smoke.json").read_text())
    scale_out = results["scenarios"]["scale_out"]
    # the added replica serves a real share of predictions, read from its scraped /metrics
    assert scale_out["share_last_10s"] >= 0.25, scale_out
    assert scale_out["failed"] == {}, scale_out
    promote = results["scenarios"]["promote"]
    # both versions answered, each answer named by the version that computed it
    assert promote["failed"] == {} and promote["mislabelled"] == 0, promote
    assert promote["unknown_version"] == 0, promote
    assert set(promote["answers_by_version"]) == {str(promote["stable"]), str(promote["canary"])}
    scale_in = results["scenarios"]["scale_in"]
    assert scale_in["requests"] > 50 and scale_in["failed"] == {}, scale_in
    events = [text for _, text in results["events"]]
    assert any(text.startswith("model-") and "stopped (exit -15)" in text for text in events)
    assert any(text.startswith("gateway-") and "stopped (exit 0)" in text for text in events)
