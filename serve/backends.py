"""Inference backends: a pool of Paddle Inference predictors, or an onnxruntime session.

Both expose ``run(batch) -> ndarray``, safe to call from many threads at once; for a bundle exported
with a fixed batch size, ``FixedBatch`` pads or splits every batch to that size.

Paddle predictors are not thread-safe, so each model owns a pool of ``predictor.clone()`` s
(clones share the weights, not the activations), each used by one thread only, so two requests
never share a predictor. onnxruntime's ``InferenceSession.run`` is thread-safe and needs no pool.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from common.bundle import Bundle, BundleError, predictor_config

from .errors import ApiError


class _Slot:
    """A predictor with its zero-copy input/output handles looked up once, not on every call."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.input = predictor.get_input_handle(predictor.get_input_names()[0])
        self.output = predictor.get_output_handle(predictor.get_output_names()[0])

    def run(self, batch: np.ndarray) -> np.ndarray:
        """One inference call: copy in, run, copy out."""
        self.input.reshape(batch.shape)
        self.input.copy_from_cpu(batch)
        self.predictor.run()
        return self.output.copy_to_cpu()


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

    def __init__(self, bundle: Bundle, settings: dict, warmup: list[np.ndarray]):
        self.config = predictor_config(bundle, device=settings["DEVICE"], threads=settings["THREADS"],
                                       mkldnn=settings["MKLDNN"], ir_optim=settings["IR_OPTIM"],
                                       memory_optim=settings["MEMORY_OPTIM"], tensorrt=settings["TENSORRT"])
        self.timeout = settings["POOL_TIMEOUT_S"]
        self.jobs: queue.Queue[tuple[np.ndarray, Future]] = queue.Queue()
        self._first = None  # the predictor the others are cloned from (clones share its weights)
        for i in range(settings["POOL_SIZE"]):
            ready: Future = Future()
            threading.Thread(target=self._serve, args=(i, warmup, ready), name=f"predictor-{bundle.path.name}-{i}",
                             daemon=True).start()
            ready.result()  # one by one: thread 0 makes the predictor the others clone; raises its error

    def _serve(self, index: int, warmup: list[np.ndarray], ready: Future) -> None:
        """Thread body: make (or clone) a predictor, warm it up, then run jobs forever."""
        from paddle import inference

        try:
            if index == 0:
                self._first = inference.create_predictor(self.config)
            slot = _Slot(self._first if index == 0 else self._first.clone())
            for batch in warmup:
                slot.run(batch)
        except Exception as exc:  # noqa: BLE001  reported to the loader, which refuses the model
            ready.set_exception(exc)
            return
        ready.set_result(True)
        while True:
            batch, future = self.jobs.get()
            if not future.set_running_or_notify_cancel():
                continue  # its request gave up waiting
            try:
                future.set_result(slot.run(batch))
            except Exception as exc:  # noqa: BLE001  handed to the request, which reports it
                future.set_exception(exc)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run ``batch`` on the first free predictor; 503 if none answers within the pool timeout."""
        future: Future = Future()
        self.jobs.put((batch, future))
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            future.cancel()
            raise ApiError(503, "busy", f"no predictor was free for {self.timeout:g} s; retry later") from None


class OnnxBackend:
    """An onnxruntime session on the bundle's inference.onnx."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, settings: dict, warmup: list[np.ndarray]):
        import onnxruntime as ort

        if bundle.onnx_file is None:
            raise BundleError(f"{bundle.path} has no inference.onnx, needed by --backend onnxruntime; "
                              "export it with `python -m export --onnx` or serve it with --backend paddle")
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings["THREADS"]
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if settings["DEVICE"] == "gpu":
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(bundle.onnx_file), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [self.session.get_outputs()[0].name]
        for batch in warmup:  # the first runs allocate buffers
            self.run(batch)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run ``batch`` (the session is thread-safe)."""
        return self.session.run(self.output_names, {self.input_name: batch})[0]


class FixedBatch:
    """Any batch size on a graph exported with a fixed batch N (``python -m export --batch N``).

    Such a graph only takes exactly N samples, so a smaller batch is padded with zeros to N and a
    larger one split into chunks of N (the last one padded); the padding rows' outputs are dropped
    and the chunks' outputs concatenated, so callers see one output row per input row as with a
    dynamic-batch bundle.
    """

    def __init__(self, backend, size: int):
        self.backend, self.size, self.name = backend, size, backend.name

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = self.size
        if len(batch) == n:
            return self.backend.run(batch)
        outputs = []
        for start in range(0, len(batch), n):
            part = batch[start:start + n]
            rows = len(part)
            if rows < n:
                part = np.concatenate([part, np.zeros((n - rows, *part.shape[1:]), part.dtype)])
            outputs.append(np.asarray(self.backend.run(part))[:rows])
        return np.concatenate(outputs)


def fixed_batch(bundle: Bundle) -> int | None:
    """N for a bundle exported with a fixed batch size N, None for a dynamic batch (-1)."""
    lead = bundle.input["shape"][0]
    return lead if isinstance(lead, int) and not isinstance(lead, bool) and lead > 0 else None


BACKENDS = {"paddle": PaddleBackend, "onnxruntime": OnnxBackend}


def create_backend(bundle: Bundle, settings: dict, warmup: list[np.ndarray]):
    """The backend ``settings["BACKEND"]`` names, loaded for ``bundle`` and run on each ``warmup`` batch.

    The warm-up batches go to the backend as they are, so for a fixed-batch bundle they must have
    its batch size (``registry.dummy_batch`` makes them so); requests then pass through ``FixedBatch``.
    """
    backend = BACKENDS[settings["BACKEND"]](bundle, settings, warmup)
    size = fixed_batch(bundle)
    return FixedBatch(backend, size) if size else backend
