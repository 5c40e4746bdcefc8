"""scripts/compare_models.py, the promotion gate, against a real model server with versions
labelled stable and canary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import model_versions
from clothing_tools.local_stack import model_config_text
from tests.canary.support import DEMO_VERSION, Versions, model_server
from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "compare_models.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--per-class", "-1"], "compare_models: --per-class must be >= 0, got -1"),
        (["--data-dir", "/nonexistent"], "compare_models: no such dataset split: "
                                         "/nonexistent/validation"),
        (["--min-agreement", "2"], "compare_models: argument --min-agreement: must be a "
                                   "fraction between 0 and 1, got 2"),
        (["--tf-serving", ""], "compare_models: TF_SERVING_HOST: must not be empty"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert (result.returncode, result.stderr.strip(), result.stdout) == (2, message, "")


@pytest.mark.slow
def test_the_gate_passes_a_reordered_export_and_fails_a_mislabelled_one(
    versions: Versions, dataset_dir: Path, logs: Path, tmp_path: Path
) -> None:
    base = tmp_path / "clothing-model"
    base.mkdir()
    (base / str(DEMO_VERSION)).symlink_to(versions.folder(DEMO_VERSION))
    (base / "3").symlink_to(versions.folder(3))  # the same classifier, labels reordered
    model_versions.reexport(versions.folder(DEMO_VERSION), base, 5, mislabelled=True)
    configs = {}
    for canary in (3, 5):
        configs[canary] = tmp_path / f"canary-{canary}.config"
        configs[canary].write_text(
            model_config_text("clothing-model", base, {"stable": DEMO_VERSION, "canary": canary})
        )
    common = ["--data-dir", str(dataset_dir), "--per-class", "3", "--json"]

    with model_server("127.0.0.2", base, logs / "gate-3.log", configs[3]) as server:
        good = run("--tf-serving", server.grpc_target, *common)
    with model_server("127.0.0.2", base, logs / "gate-5.log", configs[5]) as server:
        bad = run("--tf-serving", server.grpc_target, *common)
    with model_server("127.0.0.2", versions.demo, logs / "gate-plain.log") as server:
        unlabelled = run("--tf-serving", server.grpc_target, *common)

    assert good.returncode == 0, good.stderr
    passed = json.loads(good.stdout)
    assert passed["passed"] and passed["agreement"] == 1.0 and passed["photos"] == 30
    assert passed["stable_accuracy"] == passed["canary_accuracy"] > 0.5
    assert (passed["stable_version"], passed["canary_version"]) == (DEMO_VERSION, 3)
    assert bad.returncode == 1, bad.stderr
    failed = json.loads(bad.stdout)
    assert not failed["passed"] and failed["agreement"] < 0.5
    assert failed["canary_accuracy"] < failed["stable_accuracy"]
    assert unlabelled.returncode == 2
    assert unlabelled.stderr.strip().endswith(
        "has no versions labelled stable and canary (start TF Serving with a model config "
        "that has both)"
    )
