"""B5's model-server-alone run against the real model server, with the gateway's own requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gateway.preprocessing import to_model_input

from benchmarks.b5_ceiling import model_server_alone
from benchmarks.config import Model
from clothing_tools.local_stack import Running
from tests.helpers import DEMO_MODEL_BASE


def test_the_ceiling_drives_the_model_server_with_predicts_pinned_to_the_served_version(
    model_server: Running, dataset_dir: Path
) -> None:
    # B5 builds Predicts with the gateway's predict_request, pinned to a version: one pinned to
    # a version nobody serves fails with NOT_FOUND here, not only in `make bench`
    model = Model.load(DEMO_MODEL_BASE)
    photos = sorted((dataset_dir / "validation").glob("*/*.jpg"))[:4]
    images = np.stack([to_model_input(p.read_bytes(), model.spec) for p in photos])
    rate = model_server_alone(model, model_server.grpc_target, images, clients=2, seconds=1.0)
    assert rate > 0
