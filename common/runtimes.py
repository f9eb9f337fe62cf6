"""The runtimes a bundle can run on: one class each, and ``RUNTIMES``, the one table that lists them.

Export's parity (``export/parity.py``) and the server's backends (``serve/backends.py``,
``serve/autoselect.py``, the ``--backend`` choices in ``serve/config.py``) are all built from this
table, so a new runtime is one class here and one entry in ``RUNTIMES``: it then gets a parity
check and a status in every export's manifest, a ``--backend`` choice and a row in ``--backend
auto`` 's table.

A runtime ``open`` s a bundle folder into an engine (the loaded model); an engine hands out
runners, each with ``run(arrays) -> arrays`` in the bundle's input and output order. Who may call
a runner is the runtime's ``sharing``, which tells the server how to pool it:

- ``"thread"``: a runner is made and used by one thread only (Paddle Inference: with oneDNN it
  caches kernels per thread id, so a predictor must stay with its thread);
- ``"borrow"``: a runner runs one call at a time, borrowed by any thread (OpenVINO infer requests);
- ``"shared"``: one runner, safe to call from many threads at once (onnxruntime sessions).

Nothing here imports paddle, onnxruntime or openvino until a runtime is opened: the server's
flag parser and ``python -m export -h`` read this table.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .bundle import PREFIX, graph_file

REFERENCE = "paddle"  # the runtime the others are compared with when a server chooses (serve/autoselect.py)


class Runtime:
    """What every runtime declares; subclasses fill in the attributes and ``open``."""

    name = ""                 # key in RUNTIMES: the --backend value and the manifest's key
    platform = ""             # what V2 model metadata and the server's table call it
    package: str | None = None  # the module it needs beyond paddle
    extra = ""                # the package extra that installs it (pyproject.toml)
    reads_onnx = False        # runs inference.onnx (else the Paddle graph)
    devices = ("cpu", "gpu")  # where it can run
    sharing = "shared"        # how threads may use its runners (module docstring)
    switches: dict = {}       # its own options and their defaults (a server passes those it has settings for)
    fixed: dict = {}          # options it always sets, whatever it is passed
    parity_switches: tuple[dict, ...] = ({},)  # the option sets export's parity checks, each against the dygraph model

    def missing(self) -> str | None:
        """Why this runtime cannot run in this Python (its package does not import), or None."""
        if self.package is None:
            return None
        try:
            importlib.import_module(self.package)
        except ImportError as exc:
            return f"the {self.package} package is not installed (pip install 'paddle-d2s-toolkit[{self.extra}]'): {exc}"
        return None

    def unavailable(self, folder: str | Path, device: str = "cpu") -> str | None:
        """Why this runtime cannot run the bundle in ``folder`` on ``device`` here, or None when it can be tried."""
        if device not in self.devices:
            return f"{' or '.join(d.upper() for d in self.devices)} only (--device {self.devices[0]})"
        if self.reads_onnx and not (Path(folder) / f"{PREFIX}.onnx").is_file():
            return "the bundle has no inference.onnx (exported with --no-onnx, or paddle2onnx could not convert it)"
        return self.missing()

    def describe(self, switches: dict) -> str:
        """A few words for one parity option set, e.g. "oneDNN on" ("-" when the runtime has none)."""
        return "-"

    def open(self, folder: str | Path, *, input_names: list[str] | None = None, device: str = "cpu",
             threads: int = 1, streams: int = 1, **switches):
        """The bundle in ``folder`` loaded: an engine whose ``runner()`` runs it (inputs in ``input_names`` order)."""
        raise NotImplementedError


# ---- Paddle Inference ----------------------------------------------------------------------------


def predictor_config(bundle, device: str = "cpu", threads: int = 1, mkldnn: bool = True, ir_optim: bool = True,
                     memory_optim: bool = False, tensorrt: bool = False, gpu_mem_mb: int = 256, gpu_id: int = 0):
    """A ``paddle.inference.Config`` for the graph (.json or .pdmodel) and weights of a bundle or folder.

    ``memory_optim`` is off by default: on Paddle 3.3 PIR programs, ``enable_memory_optim()`` makes
    ``create_predictor`` fail ("Not find predictor_id 0 and pass_name memory_optimize_pass").
    """
    from paddle import inference

    # Name both files: on Paddle 3.3 ``Config(dir, "inference")`` only looks for inference.json,
    # while this form loads the PIR .json and the legacy .pdmodel alike.
    folder = Path(getattr(bundle, "path", bundle))
    config = inference.Config(str(graph_file(folder)), str(folder / f"{PREFIX}.pdiparams"))
    if device == "gpu":
        config.enable_use_gpu(gpu_mem_mb, gpu_id)
        if tensorrt:
            config.enable_tensorrt_engine(workspace_size=1 << 28, max_batch_size=64, min_subgraph_size=3,
                                          precision_mode=inference.PrecisionType.Float32,
                                          use_static=False, use_calib_mode=False)
    else:
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(threads)
        if mkldnn:
            config.enable_mkldnn()
        else:
            config.disable_mkldnn()
    config.switch_ir_optim(ir_optim)
    if memory_optim:
        config.enable_memory_optim()
    config.disable_glog_info()
    return config


def create_predictor(bundle, **options):
    """A ready ``paddle.inference`` predictor for a bundle or folder (options as in ``predictor_config``)."""
    from paddle import inference

    return inference.create_predictor(predictor_config(bundle, **options))


class PredictorRunner:
    """A predictor with its zero-copy input and output handles looked up once, in feed/fetch order."""

    def __init__(self, predictor, input_names: list[str] | None = None):
        self.predictor = predictor
        names = input_names or predictor.get_input_names()
        self.inputs = [predictor.get_input_handle(n) for n in names]
        self.outputs = [predictor.get_output_handle(n) for n in predictor.get_output_names()]

    def run(self, arrays) -> list:
        """One inference call: copy each array in (a single array is the only input), run, copy out."""
        arrays = [arrays] if not isinstance(arrays, (list, tuple)) else arrays
        for handle, array in zip(self.inputs, arrays, strict=True):
            handle.reshape(list(array.shape))
            handle.copy_from_cpu(array)
        self.predictor.run()
        return [handle.copy_to_cpu() for handle in self.outputs]


class PaddleEngine:
    """One predictor; ``runner()`` gives it out first, then clones (which share its weights)."""

    def __init__(self, config, input_names: list[str] | None, platform: str):
        from paddle import inference

        self.first = inference.create_predictor(config)
        self.input_names, self.platform, self._given = input_names, platform, False
        self.arity = (len(self.first.get_input_names()), len(self.first.get_output_names()))

    def runner(self) -> PredictorRunner:
        """A runner of its own for the calling thread (the first predictor, then clones)."""
        predictor = self.first.clone() if self._given else self.first
        self._given = True
        return PredictorRunner(predictor, self.input_names)


class PaddleInference(Runtime):
    """Paddle Inference on the bundle's own graph: the reference, and the runtime every bundle has."""

    name, platform, sharing = "paddle", "paddle_inference", "thread"
    switches = {"mkldnn": True, "ir_optim": True, "memory_optim": False, "tensorrt": False}
    # oneDNN's fused kernels are the likeliest source of a difference, so both ways are proven.
    parity_switches = ({"mkldnn": True}, {"mkldnn": False})

    def describe(self, switches: dict) -> str:
        return "oneDNN " + ("on" if switches.get("mkldnn", True) else "off")

    def open(self, folder, *, input_names=None, device="cpu", threads=1, streams=1, **switches):
        options = {**self.switches, **switches, **self.fixed}
        config = predictor_config(folder, device=device, threads=threads, **options)
        platform = "paddle_tensorrt" if device == "gpu" and options["tensorrt"] else self.platform
        return PaddleEngine(config, input_names, platform)


class PaddleTensorRT(PaddleInference):
    """Paddle Inference with TensorRT subgraphs (GPU only, FP32, dynamic shapes)."""

    name, platform, devices = "paddle_tensorrt", "paddle_tensorrt", ("gpu",)
    fixed = {"tensorrt": True}
    parity_switches = ({},)

    def describe(self, switches: dict) -> str:
        return "-"


# ---- onnxruntime ----------------------------------------------------------------------------------


def onnx_session(path: str | Path, threads: int = 1, device: str = "cpu"):
    """An onnxruntime session with ``threads`` intra-op threads (CUDA first on a GPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: not its notes on initializers paddle2onnx left unused
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "gpu" else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


class OnnxEngine:
    """An onnxruntime session: thread-safe, so it is its own and only runner."""

    platform = "onnxruntime"

    def __init__(self, session):
        self.session = session
        # paddle2onnx keeps the graph's feed and fetch order, which is the order the bundle declares.
        self.input_names = [i.name for i in session.get_inputs()]
        self.arity = (len(self.input_names), len(session.get_outputs()))

    def runner(self) -> "OnnxEngine":
        return self

    def run(self, arrays) -> list:
        """Run ``arrays`` (one per input, in order)."""
        return self.session.run(None, dict(zip(self.input_names, arrays)))


class OnnxRuntime(Runtime):
    """onnxruntime on the bundle's inference.onnx."""

    name, platform, package, reads_onnx, sharing = "onnxruntime", "onnxruntime", "onnxruntime", True, "shared"
    extra = "onnx"

    def open(self, folder, *, input_names=None, device="cpu", threads=1, streams=1, **switches):
        return OnnxEngine(onnx_session(Path(folder) / f"{PREFIX}.onnx", threads=threads, device=device))


# ---- OpenVINO --------------------------------------------------------------------------------------


def openvino_model(onnx_file: str | Path, threads: int = 1, streams: int = 1):
    """An OpenVINO ``CompiledModel`` for the CPU, ``streams`` infer requests able to run at once.

    FP32 is asked for explicitly: on CPUs with bf16 units OpenVINO would otherwise compute in bf16,
    about 3 significant digits, far outside any parity tolerance. No thread pinning: gunicorn runs
    several workers on the same cores, and pinned threads of two processes would fight over them.
    """
    import openvino

    core = openvino.Core()
    return core.compile_model(core.read_model(str(onnx_file)), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": threads * streams,
        "ENABLE_CPU_PINNING": False})


def openvino_run(request, arrays) -> list:
    """One call of an OpenVINO ``InferRequest``: inputs and outputs in the graph's order (copies out)."""
    return list(request.infer(dict(enumerate(arrays))).to_tuple())


class OpenVinoRequest:
    """One infer request: one call at a time."""

    def __init__(self, request):
        self.request = request

    def run(self, arrays) -> list:
        return openvino_run(self.request, arrays)


class OpenVinoEngine:
    """A compiled model; each ``runner()`` is a new infer request on one of its streams."""

    platform = "openvino"

    def __init__(self, compiled):
        self.compiled = compiled
        self.arity = (len(compiled.inputs), len(compiled.outputs))

    def runner(self) -> OpenVinoRequest:
        return OpenVinoRequest(self.compiled.create_infer_request())


class OpenVino(Runtime):
    """OpenVINO's CPU plugin on the bundle's inference.onnx, in FP32."""

    name, platform, package, reads_onnx, sharing = "openvino", "openvino", "openvino", True, "borrow"
    extra = "openvino"

    def open(self, folder, *, input_names=None, device="cpu", threads=1, streams=1, **switches):
        return OpenVinoEngine(openvino_model(Path(folder) / f"{PREFIX}.onnx", threads=threads, streams=streams))


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (PaddleInference(), OnnxRuntime(), OpenVino(), PaddleTensorRT())}


def get(name: str) -> Runtime:
    """The runtime called ``name``; ``ValueError`` listing the known ones otherwise."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    return RUNTIMES[name]
