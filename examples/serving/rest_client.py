"""Ask a TF Serving REST endpoint for detections on image files.

Serve the export first (GPU; drop `--gpus all` and `-gpu` for CPU):

    docker run --gpus all -p 8501:8501 -p 8500:8500 \\
        -v "$PWD/runs/export:/models/retinanet" -e MODEL_NAME=retinanet tensorflow/serving:latest-gpu

then: python examples/serving/rest_client.py photo.jpg [more.jpg ...] --url http://localhost:8501
"""

import argparse
import base64
import json
import urllib.request


def build_body(image_paths, signature_name="serving_default"):
    """The JSON body of a REST `:predict` call: encoded images as `{"b64": ...}` instances (row format)."""
    instances = []
    for path in image_paths:
        with open(path, "rb") as file:
            instances.append({"b64": base64.b64encode(file.read()).decode("ascii")})
    return {"signature_name": signature_name, "instances": instances}


def predict(image_paths, url="http://localhost:8501", model_name="retinanet", timeout=30):
    """POSTs the images to `<url>/v1/models/<model_name>:predict`; returns the decoded `predictions` list, one
    dict per image with `detection_boxes` (relative ymin, xmin, ymax, xmax), `detection_scores`,
    `detection_classes` (1-based) and `num_detections`."""
    request = urllib.request.Request(
        f"{url}/v1/models/{model_name}:predict", data=json.dumps(build_body(image_paths)).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)["predictions"]


def main():
    parser = argparse.ArgumentParser(description="Detections from a TF Serving REST endpoint.")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--url", default="http://localhost:8501")
    parser.add_argument("--model-name", default="retinanet")
    parser.add_argument("--min-score", type=float, default=0.3)
    args = parser.parse_args()
    for path, prediction in zip(args.images, predict(args.images, args.url, args.model_name)):
        print(path)
        for box, score, cls in zip(prediction["detection_boxes"], prediction["detection_scores"],
                                   prediction["detection_classes"]):
            if score >= args.min_score:
                print(f"  class {int(cls)}  score {score:.3f}  box (ymin, xmin, ymax, xmax) "
                      f"{', '.join(f'{v:.3f}' for v in box)}")


if __name__ == "__main__":
    main()
