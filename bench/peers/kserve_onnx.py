"""KServe's Python model server over an ONNX file: the minimal custom model a KServe user writes.

Run inside KServe's own virtual environment (bench/peers/kserve.txt) by bench/compare_servers.py:
``python kserve_onnx.py --model_name mnist --onnx FILE --http_port PORT --workers 2``.
One onnxruntime session per worker, one intra-op thread, as in our server.
"""
import argparse

import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.model_server import parser as kserve_parser


class OnnxModel(Model):
    """V2 inference: the request's first input through the ONNX graph, every output answered."""

    def __init__(self, name: str, onnx_file: str):
        super().__init__(name)
        self.onnx_file = onnx_file
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(self.onnx_file, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def __getstate__(self):  # KServe's workers are spawned processes: each builds its own session
        return {k: v for k, v in self.__dict__.items() if k != "session"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        outputs = self.session.run(None, {self.input_name: payload.inputs[0].as_numpy()})
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[
            InferOutput(name=name, shape=list(out.shape), datatype="FP32", data=out)
            for name, out in zip(self.output_names, outputs)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve_parser])
    parser.add_argument("--onnx", required=True)
    args, _ = parser.parse_known_args()
    ModelServer(http_port=args.http_port, workers=args.workers, enable_grpc=False, enable_latency_logging=False,
                access_log_format=None).start([OnnxModel(args.model_name, args.onnx)])
