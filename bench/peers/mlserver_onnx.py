"""MLServer's custom runtime over an ONNX file: the minimal MLModel an MLServer user writes.

bench/compare_servers.py writes a model-settings.json naming ``mlserver_onnx.OnnxModel`` and starts
``mlserver start FOLDER`` in MLServer's own virtual environment (bench/peers/mlserver.txt).
One onnxruntime session per inference process, one intra-op thread, as in our server.
"""
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    """V2 inference: the request's first input through the ONNX graph, every output answered."""

    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        outputs = self.session.run(None, {self.input_name: x})
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[
            NumpyCodec.encode_output(name, out) for name, out in zip(self.output_names, outputs)])
