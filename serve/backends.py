"""Inference backends: a runtime of ``common/runtimes.py`` opened on a bundle and pooled for request threads.

All expose ``run(inputs) -> outputs``: lists of arrays in the order the bundle's ``Inputs`` and
``Outputs`` declare them, safe to call from many threads at once; for a bundle exported with a fixed
batch size, ``FixedBatch`` pads or splits every batch to that size. Which runtime serves a model is
``--backend`` 's choice, or with ``auto`` serve/autoselect.py's.

Nothing here names a runtime: the pool follows the runtime's ``sharing`` (``POOLS``), and its
options come from the server settings of the same names (``SWITCH_SETTINGS``).
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from common.bundle import Bundle, BundleError
from common.runtimes import RUNTIMES

from .errors import ApiError

# A runtime's switch -> the server setting that gives its value.
SWITCH_SETTINGS = {"mkldnn": "MKLDNN", "ir_optim": "IR_OPTIM", "memory_optim": "MEMORY_OPTIM", "tensorrt": "TENSORRT"}


def open_engine(runtime, bundle: Bundle, settings: dict):
    """``runtime`` opened on ``bundle`` with the server's threads, streams and the switches it has settings for."""
    switches = {k: settings[SWITCH_SETTINGS[k]] for k in runtime.switches
                if k in SWITCH_SETTINGS and SWITCH_SETTINGS[k] in settings}
    engine = runtime.open(bundle.path, input_names=[t["name"] for t in bundle.inputs], device=settings["DEVICE"],
                          threads=settings["THREADS"], streams=settings["POOL_SIZE"], **switches)
    check_arity(bundle, *engine.arity)
    return engine


def check_arity(bundle: Bundle, inputs: int, outputs: int) -> None:
    """Refuse a graph whose inputs or outputs do not match what inference.yml declares."""
    if inputs != len(bundle.inputs) or outputs != len(bundle.outputs):
        raise BundleError(f"{bundle.path}: the graph has {inputs} inputs and {outputs} outputs; inference.yml "
                          f"declares {len(bundle.inputs)} and {len(bundle.outputs)}")


class ThreadOwnedPool:
    """``pool_size`` runners, each made, warmed up and run by one long-lived thread of its own.

    Why threads own the runners instead of a queue of runners that request threads borrow: with
    oneDNN, Paddle caches kernels per *thread id*; the development server starts a thread per
    request, and a new thread that reuses a dead thread's id finds that thread's stale cache and the
    run fails (``RuntimeError: std::exception``, intermittently). Here a predictor is created,
    warmed up and run only by its own thread, which lives as long as the process. Requests queue
    jobs; the first free runner thread takes one. The hand-off costs tens of microseconds.
    """

    def __init__(self, runtime, bundle: Bundle, settings: dict, warmup: list[list[np.ndarray]]):
        self.runtime, self.bundle, self.settings = runtime, bundle, settings
        self.name = runtime.platform
        self.timeout = settings["POOL_TIMEOUT_S"]
        self.jobs: queue.Queue[tuple[list[np.ndarray], Future] | None] = queue.Queue()
        self.engine = None  # opened by thread 0; the others take runners (clones) from it
        self.size = settings["POOL_SIZE"]
        for i in range(self.size):
            ready: Future = Future()
            threading.Thread(target=self._serve, args=(i, warmup, ready), name=f"{self.name}-{bundle.path.name}-{i}",
                             daemon=True).start()
            ready.result()  # one by one: thread 0 opens the engine the others take runners from; raises its error

    def _serve(self, index: int, warmup: list[list[np.ndarray]], ready: Future) -> None:
        """Thread body: open the engine (thread 0) and take a runner, warm it up, then run jobs forever."""
        try:
            if index == 0:
                self.engine = open_engine(self.runtime, self.bundle, self.settings)
                self.name = self.engine.platform
            slot = self.engine.runner()
            for inputs in warmup:
                slot.run(inputs)
        except Exception as exc:  # noqa: BLE001  reported to the loader, which refuses the model
            ready.set_exception(exc)
            return
        ready.set_result(True)
        while (job := self.jobs.get()) is not None:
            inputs, future = job
            if not future.set_running_or_notify_cancel():
                continue  # its request gave up waiting
            try:
                future.set_result(slot.run(inputs))
            except Exception as exc:  # noqa: BLE001  handed to the request, which reports it
                future.set_exception(exc)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``inputs`` on the first free runner; 503 if none answers within the pool timeout."""
        future: Future = Future()
        self.jobs.put((inputs, future))
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            future.cancel()
            raise ApiError(503, "busy", f"no predictor was free for {self.timeout:g} s; retry later") from None

    def close(self) -> None:
        """End the runner threads (a backend that --backend auto did not choose), freeing their predictors."""
        for _ in range(self.size):
            self.jobs.put(None)


PaddleBackend = ThreadOwnedPool  # the pool Paddle Inference runs in (bench/request_cost.py times its hand-off)


class BorrowedPool:
    """``POOL_SIZE`` runners that request threads borrow, one call at a time each."""

    def __init__(self, runtime, bundle: Bundle, settings: dict, warmup: list[list[np.ndarray]]):
        engine = open_engine(runtime, bundle, settings)
        self.name, self.timeout = engine.platform, settings["POOL_TIMEOUT_S"]
        self.runners: queue.Queue = queue.Queue()
        for _ in range(settings["POOL_SIZE"]):
            self.runners.put(engine.runner())
        for inputs in warmup:
            self.run(inputs)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``inputs`` on a free runner; 503 if none is free within the pool timeout."""
        try:
            runner = self.runners.get(timeout=self.timeout)
        except queue.Empty:
            raise ApiError(503, "busy", f"no {self.name} runner was free for {self.timeout:g} s; retry later") from None
        try:
            return runner.run(inputs)
        finally:
            self.runners.put(runner)

    def close(self) -> None:
        """Nothing to end: the engine and its runners go with this object."""


class SharedRunner:
    """One thread-safe runner for every request thread."""

    def __init__(self, runtime, bundle: Bundle, settings: dict, warmup: list[list[np.ndarray]]):
        engine = open_engine(runtime, bundle, settings)
        self.name, self.runner = engine.platform, engine.runner()
        for inputs in warmup:  # the first runs allocate buffers
            self.run(inputs)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``inputs`` (the runner is thread-safe)."""
        return self.runner.run(inputs)

    def close(self) -> None:
        """Nothing to end: the engine goes with this object."""


POOLS = {"thread": ThreadOwnedPool, "borrow": BorrowedPool, "shared": SharedRunner}  # by Runtime.sharing


class FixedBatch:
    """Any batch size on a graph exported with a fixed batch N (``python -m export --batch N``).

    Such a graph only takes exactly N samples, so a smaller batch is padded with zeros to N and a
    larger one split into chunks of N (the last one padded); the padding rows' outputs are dropped
    and the chunks' outputs concatenated, so callers see one output row per input row as with a
    dynamic-batch bundle.
    """

    def __init__(self, backend, size: int):
        self.backend, self.size, self.name = backend, size, backend.name
        self.close = backend.close

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        n, total = self.size, len(inputs[0])
        if total == n:
            return self.backend.run(inputs)
        pieces = []
        for start in range(0, total, n):
            parts = [x[start:start + n] for x in inputs]
            rows = len(parts[0])
            if rows < n:
                parts = [np.concatenate([p, np.zeros((n - rows, *p.shape[1:]), p.dtype)]) for p in parts]
            pieces.append([np.asarray(out)[:rows] for out in self.backend.run(parts)])
        return [np.concatenate(per_output) for per_output in zip(*pieces)]


def missing_package(backend: str) -> str | None:
    """Why runtime ``backend`` cannot run in this Python (its package does not import), or None when it can."""
    runtime = RUNTIMES.get(backend)
    return runtime.missing() if runtime else None


def create_backend(bundle: Bundle, settings: dict, warmup: list[list[np.ndarray]], backend: str | None = None):
    """The runtime named ``backend`` (default: ``settings["BACKEND"]``) opened on ``bundle``, pooled as its
    ``sharing`` asks, and run on each ``warmup`` batch.

    ``BundleError`` when the runtime cannot run this bundle here (no inference.onnx, wrong device, ...).
    The warm-up batches go to the backend as they are, so for a fixed-batch bundle they must have
    its batch size (``Bundle.zeros`` makes them so); requests then pass through ``FixedBatch``.
    """
    name = backend or settings["BACKEND"]
    runtime = RUNTIMES[name]
    if why := runtime.unavailable(bundle.path, settings["DEVICE"]):
        raise BundleError(f"{bundle.path} cannot be served with --backend {name}: {why}")
    made = POOLS[runtime.sharing](runtime, bundle, settings, warmup)
    size = bundle.fixed_batch
    return FixedBatch(made, size) if size else made
