"""Server-side batching: concurrent Predict calls merged into one graph run.

A small version of TF Serving's BatchingSession on a SharedBatchScheduler. Requests that
fetch the same outputs of the same signature of the same servable share a queue; a batch
closes when it is full (max_batch_size rows) or its first task has waited
batch_timeout_micros, and one of num_batch_threads threads runs it. Inputs are concatenated
along dimension 0 (padded up to an allowed batch size if configured) and every output is
split back by rows, so, as in TF Serving, every fetched output needs the batch dimension.
The messages are TF Serving's (`batching_session.cc`, `shared_batch_scheduler.h`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from devserver.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ServingError,
    Unavailable,
)
from devserver.servable import Servable
from devserver.settings import BatchingParameters

log = logging.getLogger("devserver.batching")


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: ServingError | None = None


@dataclass
class _Batch:
    deadline: float
    tasks: list[_Task] = field(default_factory=list)
    rows: int = 0


@dataclass
class _Queue:
    servable: Servable
    signature_name: str
    aliases: list[str]
    open: _Batch | None = None
    closed: deque[_Batch] = field(default_factory=deque)


QueueKey = tuple[int, str, tuple[str, ...], tuple[str, ...]]


def batch_size(inputs: dict[str, np.ndarray]) -> int:
    """The shared 0th dimension of a request's inputs (BatchingSession's ComputeInputSize)."""
    if not inputs:
        raise InvalidArgument("Batching Run() must have at least one input tensor")
    sizes = set()
    for value in inputs.values():
        if value.ndim == 0:
            raise InvalidArgument("Batching Run() input tensors must have at least one dimension")
        sizes.add(value.shape[0])
    if len(sizes) != 1:
        raise InvalidArgument("Batching Run() input tensors must have equal 0th-dimension size")
    return int(sizes.pop())


class BatchScheduler:
    """Queues per (servable, signature, inputs, outputs) served by a shared thread pool."""

    def __init__(self, params: BatchingParameters) -> None:
        self.params = params
        self._cond = threading.Condition()
        self._queues: dict[QueueKey, _Queue] = {}
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the batch threads."""
        for index in range(self.params.num_batch_threads):
            thread = threading.Thread(
                target=self._work, name=f"{self.params.thread_pool_name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Run what is queued, then stop the batch threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def enqueued_batches(self) -> int:
        """Batches waiting for a batch thread, open ones included."""
        with self._cond:
            return sum(len(q.closed) + (q.open is not None) for q in self._queues.values())

    def run(
        self,
        servable: Servable,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        aliases: list[str],
    ) -> dict[str, np.ndarray]:
        """Enqueue one request, wait for its batch to run, return its rows of the outputs."""
        task = _Task(inputs=inputs, rows=batch_size(inputs))
        key: QueueKey = (id(servable), signature_name, tuple(sorted(inputs)), tuple(aliases))
        self._schedule(key, _Queue(servable, signature_name, list(aliases)), task)
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def _schedule(self, key: QueueKey, new_queue: _Queue, task: _Task) -> None:
        limit = self.params.max_batch_size
        with self._cond:
            if self._stopping:
                raise Unavailable("The model server is shutting down")
            if task.rows > limit:
                raise InvalidArgument(
                    f"Task size {task.rows} is larger than maximum input batch size {limit}"
                )
            queue = self._queues.setdefault(key, new_queue)
            if queue.open is not None and queue.open.rows + task.rows > limit:
                queue.closed.append(queue.open)
                queue.open = None
            if queue.open is None:
                if len(queue.closed) >= self.params.max_enqueued_batches:
                    raise Unavailable(
                        "The batch scheduling queue to which this task was submitted is full"
                    )
                timeout = self.params.batch_timeout_micros / 1e6
                queue.open = _Batch(deadline=time.monotonic() + timeout)
            queue.open.tasks.append(task)
            queue.open.rows += task.rows
            if queue.open.rows >= limit:
                queue.closed.append(queue.open)
                queue.open = None
            self._cond.notify_all()

    def _next_batch(self) -> tuple[_Queue, _Batch] | None:
        with self._cond:
            while True:
                for queue in self._queues.values():
                    if queue.closed:
                        return queue, queue.closed.popleft()
                now, wake_at = time.monotonic(), None
                for queue in self._queues.values():
                    batch = queue.open
                    if batch is None:
                        continue
                    if batch.deadline <= now or self._stopping:
                        queue.open = None
                        return queue, batch
                    wake_at = batch.deadline if wake_at is None else min(wake_at, batch.deadline)
                if self._stopping:
                    return None
                self._cond.wait(None if wake_at is None else wake_at - now)

    def _work(self) -> None:
        while (item := self._next_batch()) is not None:
            queue, batch = item
            try:
                self._process(queue, batch)
            except ServingError as err:
                for task in batch.tasks:
                    task.error = err
            except Exception as err:
                log.exception("batch of %d rows failed", batch.rows)
                for task in batch.tasks:
                    task.error = Internal(f"Batch processing failed: {err}")
            finally:
                for task in batch.tasks:
                    task.done.set()

    def _padded_size(self, rows: int) -> int:
        for allowed in self.params.allowed_batch_sizes:
            if allowed >= rows:
                return allowed
        return rows

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        padding = self._padded_size(batch.rows) - batch.rows
        merged: dict[str, np.ndarray] = {}
        for name in batch.tasks[0].inputs:
            parts = [task.inputs[name] for task in batch.tasks]
            if any(part.shape[1:] != parts[0].shape[1:] for part in parts):
                raise FailedPrecondition(
                    f"Tensors with name '{name}' from different tasks have different shapes and "
                    "padding is turned off. Set pad_variable_length_inputs to true, or ensure "
                    "that all tensors with the same name have equal dimensions starting with "
                    "the first dim."
                )
            if padding:
                # TF Serving pads with the first row of the last task.
                parts.append(np.repeat(parts[-1][:1], padding, axis=0))
            merged[name] = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]

        outputs = queue.servable.run(queue.signature_name, merged, queue.aliases)

        total = batch.rows + padding
        for value in outputs.values():
            if value.ndim == 0:
                raise FailedPrecondition("Batched output tensor has 0 dimensions")
            if value.shape[0] != total:
                raise FailedPrecondition(
                    "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                    "dimension sizes of the input tensors"
                )
        offset = 0
        for task in batch.tasks:
            task.outputs = {
                alias: value[offset : offset + task.rows] for alias, value in outputs.items()
            }
            offset += task.rows
