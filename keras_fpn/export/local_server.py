"""A local stand-in for TF Serving's predict APIs (REST and gRPC), to try clients where TF Serving cannot run.

TF Serving is the way to serve an export (`docker run -p 8501:8501 -p 8500:8500 -v "$PWD/export:/models/retinanet"
-e MODEL_NAME=retinanet tensorflow/serving`, `:latest-gpu` with `--gpus all` on GPUs). Where there is no Docker
and no `tensorflow_model_server` (Colab, CI), this module answers the same requests from the same SavedModel:

- REST `POST /v1/models/<name>[/versions/<n>]:predict` with a row (`"instances"`) or columnar (`"inputs"`) body,
  binary strings as `{"b64": ...}`; the answer is `{"predictions": [...]}` or `{"outputs": {...}}` as TF Serving
  gives it; `GET /v1/models/<name>` reports the version as AVAILABLE.
- gRPC `tensorflow.serving.PredictionService/Predict` (needs `tensorflow-serving-api`).

It is a development tool: one model, one process, no batching, no model reloading.

    python -m keras_fpn.export.local_server --model_base_path runs/demo/export --model_name retinanet

Example:

    server = LocalServer("runs/demo/export", model_name="retinanet", rest_port=0, grpc_port=0)
    server.start()          # server.rest_url, server.grpc_target
    ...
    server.stop()
"""

import argparse
import base64
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def _latest_version(model_base_path):
    versions = [int(name) for name in os.listdir(model_base_path)
                if name.isdigit() and os.path.isfile(os.path.join(model_base_path, name, "saved_model.pb"))]
    if not versions:
        raise FileNotFoundError(f"No SavedModel version folder (1/, 2/, ...) with saved_model.pb in "
                                f"{model_base_path!r}.")
    return max(versions)


def _from_json(value, dtype):
    """A JSON value of a REST body as a numpy array; `{"b64": ...}` leaves become bytes."""
    def decode(item):
        if isinstance(item, dict) and set(item) == {"b64"}:
            return base64.b64decode(item["b64"])
        if isinstance(item, list):
            return [decode(element) for element in item]
        return item

    decoded = decode(value)
    return np.array(decoded, dtype=object) if dtype == "string" else np.array(decoded, dtype=dtype)


def _to_json(array):
    array = np.asarray(array)
    if array.dtype.kind in "SO":
        return np.vectorize(lambda item: {"b64": base64.b64encode(item).decode("ascii")}, otypes=[object])(
            array).tolist()
    return array.tolist()


class LocalServer:
    """Serves the newest version under `model_base_path` on TF Serving's REST and gRPC predict APIs.

    Args:
        model_base_path: str, the folder holding version folders (what `export_saved_model` writes).
        model_name: str, default `"retinanet"`, the `<name>` in request paths and `model_spec.name`.
        rest_port: int or None, default 8501; 0 picks a free port; None serves no REST.
        grpc_port: int or None, default 8500; 0 picks a free port; None serves no gRPC.
        host: str, default `"127.0.0.1"`.
    """

    def __init__(self, model_base_path, model_name="retinanet", rest_port=8501, grpc_port=8500, host="127.0.0.1"):
        import tensorflow as tf

        self.model_name = model_name
        self.version = _latest_version(model_base_path)
        self.loaded = tf.saved_model.load(os.path.join(model_base_path, str(self.version)))
        self.host, self._rest_port, self._grpc_port = host, rest_port, grpc_port
        self._http = self._grpc = None
        self.rest_url = self.grpc_target = None

    def predict(self, inputs, signature_name="serving_default"):
        """Runs a signature on `{input name: numpy array}`; returns `{output name: numpy array}`."""
        import tensorflow as tf

        if signature_name not in self.loaded.signatures:
            raise ValueError(f"Serving signature name: \"{signature_name}\" not found in signature def; the model "
                             f"has {sorted(self.loaded.signatures)}.")
        function = self.loaded.signatures[signature_name]
        specs = function.structured_input_signature[1]
        unknown = sorted(set(inputs) - set(specs))
        if unknown or not inputs:
            raise ValueError(f"Inputs {sorted(inputs)} do not match the signature's inputs {sorted(specs)}.")
        tensors = {name: tf.constant(value, dtype=specs[name].dtype) for name, value in inputs.items()}
        return {name: value.numpy() for name, value in function(**tensors).items()}

    def _input_dtypes(self, signature_name):
        function = self.loaded.signatures.get(signature_name)
        if function is None:
            return {}
        return {name: spec.dtype.name for name, spec in function.structured_input_signature[1].items()}

    # -- REST -----------------------------------------------------------------------------------------------------

    def _rest(self, body):
        signature_name = body.get("signature_name", "serving_default")
        dtypes = self._input_dtypes(signature_name)
        if "instances" in body:
            instances = body["instances"]
            if instances and isinstance(instances[0], dict) and "b64" not in instances[0]:
                inputs = {name: [instance[name] for instance in instances] for name in instances[0]}
            else:  # one unnamed input
                inputs = {next(iter(dtypes), "images"): instances}
            outputs = self.predict({name: _from_json(value, dtypes.get(name, "string"))
                                    for name, value in inputs.items()}, signature_name)
            names = sorted(outputs)
            count = len(next(iter(outputs.values())))
            return {"predictions": [{name: _to_json(outputs[name][i]) for name in names} for i in range(count)]}
        if "inputs" in body:
            inputs = body["inputs"] if isinstance(body["inputs"], dict) else {next(iter(dtypes)): body["inputs"]}
            outputs = self.predict({name: _from_json(value, dtypes.get(name, "string"))
                                    for name, value in inputs.items()}, signature_name)
            return {"outputs": {name: _to_json(value) for name, value in outputs.items()}}
        raise ValueError("Missing 'instances' or 'inputs' key")

    def _handler(self):
        server = self
        pattern = re.compile(rf"^/v1/models/{re.escape(self.model_name)}(/versions/(\d+))?(:predict)?$")

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, predict):
                match = pattern.match(self.path)
                if not match or bool(match.group(3)) != predict:
                    self._reply(404, {"error": f"Servable not found for request: {self.path}"})
                    return None
                if match.group(2) and int(match.group(2)) != server.version:
                    self._reply(404, {"error": f"Servable not found for version {match.group(2)}"})
                    return None
                return match

            def do_GET(self):  # noqa: N802 - http.server's name
                if self._route(predict=False):
                    self._reply(200, {"model_version_status": [
                        {"version": str(server.version), "state": "AVAILABLE",
                         "status": {"error_code": "OK", "error_message": ""}}]})

            def do_POST(self):  # noqa: N802
                if not self._route(predict=True):
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    self._reply(200, server._rest(body))
                except Exception as error:  # noqa: BLE001 - every failure is the client's answer, as in TF Serving
                    message = getattr(error, "message", None) or str(error)
                    self._reply(400, {"error": message})

            def log_message(self, *args):  # keep the notebook and test output clean
                pass

        return Handler

    # -- gRPC -----------------------------------------------------------------------------------------------------

    def _grpc_servicer(self):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        server = self

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):  # noqa: N802 - the gRPC method name
                if request.model_spec.name != server.model_name:
                    context.abort(grpc.StatusCode.NOT_FOUND,
                                  f"Servable not found for request: Latest({request.model_spec.name})")
                try:
                    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
                    outputs = server.predict(inputs, request.model_spec.signature_name or "serving_default")
                except Exception as error:  # noqa: BLE001
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, getattr(error, "message", None) or str(error))
                response = predict_pb2.PredictResponse()
                response.model_spec.name = server.model_name
                response.model_spec.version.value = server.version
                response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
                for name, value in outputs.items():
                    response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
                return response

        return Servicer()

    # -- life cycle -----------------------------------------------------------------------------------------------

    def start(self):
        """Starts serving in background threads; sets `rest_url` and `grpc_target`. Returns self."""
        if self._rest_port is not None:
            self._http = ThreadingHTTPServer((self.host, self._rest_port), self._handler())
            threading.Thread(target=self._http.serve_forever, daemon=True).start()
            self.rest_url = f"http://{self.host}:{self._http.server_address[1]}"
        if self._grpc_port is not None:
            from concurrent import futures

            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self._grpc_servicer(), self._grpc)
            port = self._grpc.add_insecure_port(f"{self.host}:{self._grpc_port}")
            self._grpc.start()
            self.grpc_target = f"{self.host}:{port}"
        return self

    def stop(self):
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace=None)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve a SavedModel on TF Serving's REST and gRPC predict APIs "
                                                 "(a local stand-in; use TF Serving in production).")
    parser.add_argument("--model_base_path", required=True)
    parser.add_argument("--model_name", default="retinanet")
    parser.add_argument("--rest_api_port", type=int, default=8501)
    parser.add_argument("--port", type=int, default=8500, help="gRPC port")
    args = parser.parse_args(argv)
    server = LocalServer(args.model_base_path, args.model_name, args.rest_api_port, args.port).start()
    print(f"serving {args.model_name} version {server.version}: REST {server.rest_url}, gRPC {server.grpc_target}; "
          "Ctrl-C stops", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
