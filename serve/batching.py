"""Opt-in dynamic batching: requests that arrive within a few milliseconds share one predictor call.

As in Triton and TorchServe: a batcher thread per model takes the first waiting request, then
keeps collecting for at most ``max_delay_ms`` or until ``max_batch`` samples, concatenates them,
runs the backend once and hands each request its rows. Requests already as large as
``max_batch`` skip the queue. Unlike a fixed delay, the batcher does not wait when no other
request is being handled (``busy()`` counts them): a lone request runs at once, so dynamic
batching costs nothing at concurrency 1. Whether it pays off is measured in bench/serve_load.py.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from .errors import ApiError


class InFlight:
    """Requests this process is handling now (the batcher's ``busy``): counted by the production front
    (serve/front.py) around each request it runs. Under another server nothing counts them and the
    batcher waits its full delay for company."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        return self.count

    def add(self, delta: int) -> None:
        with self._lock:
            self.count += delta


def rows(inputs: list[np.ndarray]) -> int:
    """Samples in a request: the batch dimension of its (first) input."""
    return len(inputs[0])


class DynamicBatcher:
    """Wraps a backend: ``run(inputs)`` has the same meaning, calls are merged behind the scenes."""

    def __init__(self, backend, max_batch: int, max_delay_ms: float, timeout_s: float, on_batch=None,
                 busy=None):
        self.backend, self.max_batch, self.delay = backend, max_batch, max_delay_ms / 1000.0
        self.timeout, self.on_batch = timeout_s, on_batch
        self.busy = busy or (lambda: max_batch)  # requests in this process that may still join a batch
        self.queue: queue.Queue[tuple[list[np.ndarray], Future]] = queue.Queue()
        self._held: tuple[list[np.ndarray], Future] | None = None  # a request that did not fit the last batch
        threading.Thread(target=self._loop, name="batcher", daemon=True).start()

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Queue ``inputs`` and wait for its rows of the combined result; 503 ``busy`` after ``timeout_s``."""
        if rows(inputs) >= self.max_batch:
            if self.on_batch:
                self.on_batch(rows(inputs))
            return self.backend.run(inputs)
        future: Future = Future()
        self.queue.put((inputs, future))
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            future.cancel()  # still queued: the batcher drops it; already running: its rows are dropped
            raise ApiError(503, "busy", f"the model did not answer within {self.timeout:g} s; retry later") from None

    def _loop(self) -> None:
        """Forever: collect one batch, run it, deliver the rows."""
        while True:
            # A request that gave up waiting (timeout) cancelled its future: leave it out. The others
            # are marked running, so a late cancel() fails and set_result below cannot raise.
            items = [item for item in self._collect() if item[1].set_running_or_notify_cancel()]
            if not items:
                continue
            try:
                batch = [np.concatenate(parts) for parts in zip(*(x for x, _ in items))] if len(items) > 1 \
                    else items[0][0]
                if self.on_batch:
                    self.on_batch(rows(batch))
                out = self.backend.run(batch)
            except Exception as exc:  # noqa: BLE001  delivered to every waiting request, which reports it
                for _, future in items:
                    future.set_exception(exc)
                continue
            start = 0
            for x, future in items:
                future.set_result([o[start:start + rows(x)] for o in out])
                start += rows(x)

    def _collect(self) -> list[tuple[list[np.ndarray], Future]]:
        """The next batch: the first request, then whatever arrives before the deadline and fits."""
        first = self._held or self.queue.get()
        self._held = None
        items, size = [first], rows(first[0])
        deadline = time.perf_counter() + self.delay
        while size < self.max_batch:
            if self.queue.empty() and self.busy() <= len(items):
                break  # nobody else is being handled: waiting would only add latency
            remaining = deadline - time.perf_counter()
            try:
                item = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if size + rows(item[0]) > self.max_batch:
                self._held = item
                break
            items.append(item)
            size += rows(item[0])
        return items
