"""The warm-up benchmark replays a version's records through TF Serving's session path."""

from __future__ import annotations

from benchmarks.config import DEFAULT_MODEL_BASE
from benchmarks.scaling.warmup import measure_case
from clothing_tools.local_stack import newest_version


def test_the_demo_versions_warmup_records_replay_through_a_tf1_session() -> None:
    version_dir = DEFAULT_MODEL_BASE / str(newest_version(DEFAULT_MODEL_BASE))
    measured = measure_case(version_dir, "records")
    assert measured["case"] == "records"
    for key in ("first_predict_ms", "first_describe_ms", "median_predict_ms"):
        assert measured[key] > 0, measured
