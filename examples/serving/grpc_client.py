"""Ask a TF Serving gRPC endpoint (port 8500) for detections, with `tensorflow-serving-api`'s `PredictRequest`.

    pip install tensorflow-serving-api grpcio
    python examples/serving/grpc_client.py photo.jpg --target localhost:8500

(see rest_client.py for the `docker run ... tensorflow/serving:latest-gpu` command that serves the export).
"""

import argparse


def build_request(image_paths, model_name="retinanet", signature_name="serving_default"):
    """A `PredictRequest` with the encoded images as the `images` input (`DT_STRING [batch]`)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    encoded = []
    for path in image_paths:
        with open(path, "rb") as file:
            encoded.append(file.read())
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(encoded, dtype=tf.string, shape=[len(encoded)]))
    return request


def predict(image_paths, target="localhost:8500", model_name="retinanet", timeout=30):
    """Sends the request; returns `{output name: numpy array}`."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(build_request(image_paths, model_name), timeout)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def main():
    parser = argparse.ArgumentParser(description="Detections from a TF Serving gRPC endpoint.")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--target", default="localhost:8500")
    parser.add_argument("--model-name", default="retinanet")
    parser.add_argument("--min-score", type=float, default=0.3)
    args = parser.parse_args()
    outputs = predict(args.images, args.target, args.model_name)
    for i, path in enumerate(args.images):
        print(path)
        for box, score, cls in zip(outputs["detection_boxes"][i], outputs["detection_scores"][i],
                                   outputs["detection_classes"][i]):
            if score >= args.min_score:
                print(f"  class {int(cls)}  score {score:.3f}  box (ymin, xmin, ymax, xmax) "
                      f"{', '.join(f'{v:.3f}' for v in box)}")


if __name__ == "__main__":
    main()
