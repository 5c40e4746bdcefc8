"""Warm-up replay: run `assets.extra/tf_serving_warmup_requests` before a version serves.

Like TF Serving's saved_model_warmup: the file is a TFRecord of PredictionLog protos, read
after the version loads and before it becomes AVAILABLE; at most 1000 records; a failing
record fails the load. Only `predict_log` records are supported here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import tensorflow as tf
from gateway.contract import warmup_path
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from devserver.errors import ServingError
from devserver.servable import LoadError, Servable

log = logging.getLogger("devserver.warmup")

MAX_WARMUP_RECORDS = 1000

PredictOn = Callable[[Servable, predict_pb2.PredictRequest], predict_pb2.PredictResponse]


def replay_warmup(servable: Servable, predict_on: PredictOn) -> int:
    """Replay the version's warm-up records through Predict; return how many ran."""
    path = warmup_path(servable.path)
    if not path.is_file():
        log.info("No warmup data file found at %s", path)
        return 0
    started = time.monotonic()
    count = 0
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise LoadError(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
            entry = prediction_log_pb2.PredictionLog()
            entry.ParseFromString(record.numpy())
            kind = entry.WhichOneof("log_type")
            if kind != "predict_log":
                raise LoadError(f"Unsupported log_type for warmup: {kind} (record {count})")
            predict_on(servable, entry.predict_log.request)
    except ServingError as err:
        raise LoadError(f"Warm-up record {count} of {path} failed: {err.message}") from None
    except (tf.errors.OpError, ValueError) as err:
        raise LoadError(f"Cannot read warm-up file {path}: {err}") from None
    elapsed = int((time.monotonic() - started) * 1e6)
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path,
        count,
        elapsed,
    )
    servable.warmup_records = count
    return count
