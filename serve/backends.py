"""Inference backends: a pool of Paddle Inference predictors, an onnxruntime session, or OpenVINO.

All expose ``run(inputs) -> outputs``: lists of arrays in the order the bundle's ``Inputs`` and
``Outputs`` declare them, safe to call from many threads at once; for a bundle exported with a fixed
batch size, ``FixedBatch`` pads or splits every batch to that size. Which one serves a model is
``--backend`` 's choice, or with ``auto`` serve/autoselect.py's.

Paddle predictors are not thread-safe, so each model owns a pool of ``predictor.clone()`` s
(clones share the weights, not the activations), each used by one thread only, so two requests
never share a predictor. onnxruntime's ``InferenceSession.run`` is thread-safe and needs no pool.
An OpenVINO ``InferRequest`` runs one call at a time, so a model has a pool of them (``POOL_SIZE``,
one CPU stream each) that request threads borrow.
"""
from __future__ import annotations

import importlib
import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from common.bundle import Bundle, BundleError, PredictorRunner, openvino_model, openvino_run, predictor_config

from .errors import ApiError


class PaddleBackend:
    """``pool_size`` Paddle Inference predictors for one bundle, each owned by one long-lived thread.

    Why threads own the predictors instead of a queue of predictors that request threads borrow:
    with oneDNN, Paddle caches kernels per *thread id*; the development server starts a thread per
    request, and a new thread that reuses a dead thread's id finds that thread's stale cache and the
    run fails (``RuntimeError: std::exception``, intermittently). Here a predictor is created,
    warmed up and run only by its own thread, which lives as long as the process. Requests queue
    jobs; the first free predictor thread takes one. The hand-off costs tens of microseconds.
    """

    name = "paddle_inference"

    def __init__(self, bundle: Bundle, settings: dict, warmup: list[list[np.ndarray]]):
        if settings["DEVICE"] == "gpu" and settings["TENSORRT"]:
            self.name = "paddle_tensorrt"
        self.input_names = [t["name"] for t in bundle.inputs]
        self.config = predictor_config(bundle, device=settings["DEVICE"], threads=settings["THREADS"],
                                       mkldnn=settings["MKLDNN"], ir_optim=settings["IR_OPTIM"],
                                       memory_optim=settings["MEMORY_OPTIM"], tensorrt=settings["TENSORRT"])
        self.timeout = settings["POOL_TIMEOUT_S"]
        self.jobs: queue.Queue[tuple[list[np.ndarray], Future] | None] = queue.Queue()
        self._first = None  # the predictor the others are cloned from (clones share its weights)
        self.size = settings["POOL_SIZE"]
        for i in range(self.size):
            ready: Future = Future()
            threading.Thread(target=self._serve, args=(i, warmup, ready), name=f"predictor-{bundle.path.name}-{i}",
                             daemon=True).start()
            ready.result()  # one by one: thread 0 makes the predictor the others clone; raises its error

    def _serve(self, index: int, warmup: list[list[np.ndarray]], ready: Future) -> None:
        """Thread body: make (or clone) a predictor, warm it up, then run jobs forever."""
        from paddle import inference

        try:
            if index == 0:
                self._first = inference.create_predictor(self.config)
            slot = PredictorRunner(self._first if index == 0 else self._first.clone(), self.input_names)
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
        """Run ``inputs`` on the first free predictor; 503 if none answers within the pool timeout."""
        future: Future = Future()
        self.jobs.put((inputs, future))
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            future.cancel()
            raise ApiError(503, "busy", f"no predictor was free for {self.timeout:g} s; retry later") from None

    def close(self) -> None:
        """End the predictor threads (a backend that --backend auto did not choose), freeing their predictors."""
        for _ in range(self.size):
            self.jobs.put(None)


def require_onnx(bundle: Bundle, backend: str):
    """The bundle's inference.onnx, or a BundleError saying how to get one."""
    if bundle.onnx_file is None:
        raise BundleError(f"{bundle.path} has no inference.onnx, needed by --backend {backend}; export it with "
                          "`python -m export` (without --no-onnx) or serve it with --backend paddle")
    return bundle.onnx_file


def check_arity(bundle: Bundle, inputs: int, outputs: int) -> None:
    """Refuse an ONNX graph whose inputs or outputs do not match what inference.yml declares."""
    if inputs != len(bundle.inputs) or outputs != len(bundle.outputs):
        raise BundleError(f"{bundle.onnx_file} has {inputs} inputs and {outputs} outputs; inference.yml declares "
                          f"{len(bundle.inputs)} and {len(bundle.outputs)}")


class OnnxBackend:
    """An onnxruntime session on the bundle's inference.onnx."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, settings: dict, warmup: list[list[np.ndarray]]):
        import onnxruntime as ort

        onnx_file = require_onnx(bundle, self.name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings["THREADS"]
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if settings["DEVICE"] == "gpu":
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(onnx_file), options, providers=providers)
        # paddle2onnx keeps the graph's feed and fetch order, which is the order the bundle declares.
        self.input_names = [i.name for i in self.session.get_inputs()]
        check_arity(bundle, len(self.input_names), len(self.session.get_outputs()))
        for inputs in warmup:  # the first runs allocate buffers
            self.run(inputs)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``inputs`` (the session is thread-safe)."""
        return self.session.run(None, dict(zip(self.input_names, inputs)))

    def close(self) -> None:
        """Nothing to end: the session goes with this object."""


class OpenVinoBackend:
    """OpenVINO on the bundle's inference.onnx (CPU, FP32): ``POOL_SIZE`` infer requests, one per CPU stream."""

    name = "openvino"

    def __init__(self, bundle: Bundle, settings: dict, warmup: list[list[np.ndarray]]):
        compiled = openvino_model(require_onnx(bundle, self.name), threads=settings["THREADS"],
                                  streams=settings["POOL_SIZE"])
        check_arity(bundle, len(compiled.inputs), len(compiled.outputs))
        self.timeout = settings["POOL_TIMEOUT_S"]
        self.requests: queue.Queue = queue.Queue()
        for _ in range(settings["POOL_SIZE"]):
            self.requests.put(compiled.create_infer_request())
        for inputs in warmup:
            self.run(inputs)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``inputs`` on a free infer request; 503 if none is free within the pool timeout."""
        try:
            request = self.requests.get(timeout=self.timeout)
        except queue.Empty:
            raise ApiError(503, "busy", f"no OpenVINO infer request was free for {self.timeout:g} s; "
                           "retry later") from None
        try:
            return openvino_run(request, inputs)
        finally:
            self.requests.put(request)

    def close(self) -> None:
        """Nothing to end: the compiled model and its requests go with this object."""


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


BACKENDS = {"paddle": PaddleBackend, "onnxruntime": OnnxBackend, "openvino": OpenVinoBackend}
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # backend -> the package it imports


def missing_package(backend: str) -> str | None:
    """Why ``backend`` cannot run in this Python (its package does not import), or None when it can."""
    if backend not in PACKAGES:
        return None
    try:
        importlib.import_module(PACKAGES[backend])
    except ImportError as exc:
        return f"the {PACKAGES[backend]} package is not installed (pip install -r requirements.txt): {exc}"
    return None


def create_backend(bundle: Bundle, settings: dict, warmup: list[list[np.ndarray]], backend: str | None = None):
    """The backend named ``backend`` (default: ``settings["BACKEND"]``), loaded for ``bundle`` and run on each
    ``warmup`` batch.

    The warm-up batches go to the backend as they are, so for a fixed-batch bundle they must have
    its batch size (``Bundle.zeros`` makes them so); requests then pass through ``FixedBatch``.
    """
    made = BACKENDS[backend or settings["BACKEND"]](bundle, settings, warmup)
    size = bundle.fixed_batch
    return FixedBatch(made, size) if size else made
