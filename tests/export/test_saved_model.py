"""The SavedModel as TF Serving loads it: a process without keras or keras_fpn, `saved_model_cli`, real JPEGs."""

import base64
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

# One worker runs the whole module (scripts/test.sh: --dist loadgroup), so its module fixtures are built once.
pytestmark = [pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel export is TensorFlow's"),
              pytest.mark.xdist_group("saved_model")]

import tensorflow as tf  # noqa: E402

from keras_fpn import FasterRCNN, RetinaNet  # noqa: E402
from keras_fpn.datasets import resize_and_pad  # noqa: E402
from keras_fpn.datasets.records import decode_image  # noqa: E402
from keras_fpn.export import SERVING_OUTPUTS, export_saved_model  # noqa: E402
from keras_fpn.ops.boxes import content_sizes  # noqa: E402

IMAGE_SIZE = (96, 128)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RACCOONS = ("raccoon-1.jpg", "raccoon-17.jpg", "raccoon-100.jpg")

SERVER = r"""
import importlib.abc, importlib.machinery, sys

BLOCKED = ("keras", "keras_fpn", "tf_keras")


class Blocked(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # The serving machine has TensorFlow only: keras and keras_fpn look absent, and importing them fails.

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)  # no origin: TensorFlow's probes see no keras

    def create_module(self, spec):
        raise ImportError(f"{spec.name} is blocked in the server process")

    def exec_module(self, module):
        raise ImportError(f"{module.__name__} is blocked in the server process")


sys.meta_path.insert(0, Blocked())
import numpy as np
import tensorflow as tf

export_path, requests_file, results_file = sys.argv[1:4]
loaded = tf.saved_model.load(export_path)
requests = np.load(requests_file, allow_pickle=True)
results = {}
encoded = loaded.signatures["serving_default"](images=tf.constant(list(requests["encoded"])))
results.update({f"encoded/{k}": v.numpy() for k, v in encoded.items()})
for i in range(int(requests["num_arrays"])):
    arrays = loaded.signatures["image_tensor"](images=tf.constant(requests[f"array{i}"]))
    results.update({f"array{i}/{k}": v.numpy() for k, v in arrays.items()})
loaded_blocked = [name for name in sys.modules if name.split(".")[0] in BLOCKED]
assert not loaded_blocked, loaded_blocked
try:
    import keras_fpn  # noqa: F401
    raise AssertionError("keras_fpn should not be importable here")
except ImportError:
    pass
np.savez(results_file, **results)
"""


@pytest.fixture(scope="module")
def model():
    # prior_probability=0.3 makes a random-weight model report plenty of detections to compare.
    detector = RetinaNet(num_classes=2, backbone="MobileNetV3Small", backbone_weights=None, min_level=3,
                         max_level=5, num_channels=16, head_filters=16, head_depth=1, prior_probability=0.3)
    detector.predict_on_batch(np.zeros((1, *IMAGE_SIZE, 3), np.float32))
    return detector


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_saved_model(model, str(tmp_path_factory.mktemp("export")), image_size=IMAGE_SIZE)


def _prepared(model, image):
    """The serving preprocessing: `(batch of one padded image, its content size [1, 2], scale)`."""
    prepared, _, scale = resize_and_pad(image, tf.zeros([0, 4]), IMAGE_SIZE, model.input_multiple)
    content = content_sizes(np.array([image.shape[:2]]), scale.numpy()[None])
    return prepared[None].numpy(), content, scale


def expected_detections(model, image):
    """`model.predict` after the serving preprocessing (boxes clipped to the resized content, as served), boxes
    mapped back to pixel xyxy of the original image."""
    prepared, content, scale = _prepared(model, image)
    detections = model.predict_on_batch({"images": prepared, "image_sizes": content})
    n = int(detections["num_detections"][0])
    height, width = image.shape[:2]
    boxes = np.asarray(detections["boxes"][0][:n], np.float64) / np.tile(scale.numpy()[::-1], 2)
    boxes = np.clip(boxes, 0, [width, height, width, height])
    return boxes, np.asarray(detections["scores"][0][:n]), np.asarray(detections["labels"][0][:n])


def served_pixels(outputs, prefix, index, height, width):
    """One image's served detections as pixel xyxy boxes, scores, 0-based labels."""
    n = int(outputs[f"{prefix}/num_detections"][index])
    ymin, xmin, ymax, xmax = outputs[f"{prefix}/detection_boxes"][index][:n].T.astype(np.float64)
    boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=-1)
    return boxes, outputs[f"{prefix}/detection_scores"][index][:n], outputs[f"{prefix}/detection_classes"][index][:n] - 1


def assert_same_detections(served, expected):
    (boxes, scores, labels), (want_boxes, want_scores, want_labels) = served, expected
    assert len(want_scores) > 5, "the comparison needs detections"
    assert len(scores) == len(want_scores)
    np.testing.assert_allclose(boxes, want_boxes, atol=1e-3)  # pixels
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    np.testing.assert_array_equal(labels, want_labels)


def test_layout_size_and_no_cpu_pinning(model, exported):
    assert os.path.basename(exported) == "1"
    assert os.path.exists(os.path.join(exported, "saved_model.pb"))
    weights = sum(variable.numpy().nbytes for variable in model.variables)
    stored = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in
                 os.walk(os.path.join(exported, "variables")) for name in names)
    assert stored < 1.05 * weights, (stored, weights)  # each weight once
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(exported, "saved_model.pb"), "rb") as file:
        saved.ParseFromString(file.read())
    meta_graph = saved.meta_graphs[0]
    nodes = serving_nodes(meta_graph)
    assert {"CombinedNonMaxSuppression", "Conv2D", "DecodeImage"} <= {node.op for node in nodes}
    pinned = sorted({(node.op, node.device) for node in nodes if node.device})
    assert not pinned, f"ops pinned to devices: {pinned}"  # TF Serving must be free to place them on the GPU


def serving_nodes(meta_graph):
    """Every node the signatures run: graph nodes they name, and all functions those call, transitively.
    (TF's own checkpoint save/restore functions pin their ops to the CPU; serving never runs them.)"""
    graph = meta_graph.graph_def
    functions = {function.signature.name: function for function in graph.library.function}
    by_name = {node.name: node for node in graph.node}
    pending = [by_name[tensor.name.split(":")[0]] for signature in meta_graph.signature_def.values()
               for tensor in list(signature.outputs.values())]
    seen_functions, nodes = set(), []
    while pending:
        node = pending.pop()
        nodes.append(node)
        called = [value.func.name for value in node.attr.values() if value.func.name]
        called += [function.name for value in node.attr.values() for function in value.list.func]
        called += [node.op] if node.op in functions else []
        for name in called:
            if name in functions and name not in seen_functions:
                seen_functions.add(name)
                pending.extend(functions[name].node_def)
    return nodes


def test_next_version_only_of_the_same_model_and_immutable_versions(model, exported):
    base = os.path.dirname(exported)
    with pytest.raises(FileExistsError, match="already holds version 1 of RetinaNet .*new_version=True"):
        export_saved_model(model, base, image_size=IMAGE_SIZE)
    assert os.path.basename(export_saved_model(model, base, image_size=IMAGE_SIZE, new_version=True)) == "2"
    with pytest.raises(FileExistsError, match="already exists"):
        export_saved_model(model, base, version=1, image_size=IMAGE_SIZE)
    # Another detector (other classes) never goes beside it, asked or not.
    from tests.testing import tiny_retinanet

    other = tiny_retinanet(num_classes=5)
    with pytest.raises(FileExistsError, match=r"RetinaNet .*\(2 classes\).*\(5 classes\).*another folder"):
        export_saved_model(other, base, image_size=IMAGE_SIZE, new_version=True)
    assert sorted(os.listdir(base)) == ["1", "2"]


def test_image_size_required_for_any_size_models(model, tmp_path):
    with pytest.raises(ValueError, match="pass image_size=\\(height, width\\)"):
        export_saved_model(model, str(tmp_path))


def test_served_in_a_process_without_keras_matches_predict(model, exported, raccoon, tmp_path):
    check_served_without_keras(model, exported, raccoon, tmp_path)


def test_faster_rcnn_served_in_a_process_without_keras_matches_predict(raccoon, tmp_path):
    """The same export and serving code for the two-stage detector: proposals, RoIAlign and NMS in the graph."""
    from tests.testing import tiny_convnet

    detector = FasterRCNN(num_classes=2, backbone=tiny_convnet(), backbone_weights=None, num_channels=16,
                          head_dim=32, rpn_pre_nms_topk_test=100, rpn_post_nms_topk_test=50)
    exported = export_saved_model(detector, str(tmp_path / "export"), image_size=IMAGE_SIZE)
    check_served_without_keras(detector, exported, raccoon, tmp_path)


def test_mask_rcnn_served_in_a_process_without_keras_adds_detection_masks_equal_to_predict(raccoon, tmp_path):
    from keras_fpn import MaskRCNN
    from tests.testing import tiny_convnet

    detector = MaskRCNN(num_classes=2, backbone=tiny_convnet(), backbone_weights=None, num_channels=16, head_dim=32,
                        mask_head_filters=8, mask_head_depth=1, rpn_pre_nms_topk_test=100, rpn_post_nms_topk_test=50)
    exported = export_saved_model(detector, str(tmp_path / "export"), image_size=IMAGE_SIZE)
    outputs, encoded, arrays = check_served_without_keras(detector, exported, raccoon, tmp_path,
                                                          outputs=SERVING_OUTPUTS + ("detection_masks",))
    for i, data in enumerate(encoded):
        image = decode_image(data).numpy()
        prepared, content, _ = _prepared(detector, image)
        expected = detector.predict_on_batch({"images": prepared, "image_sizes": content})["masks"][0]
        np.testing.assert_allclose(outputs["encoded/detection_masks"][i], expected, atol=1e-5)


def check_served_without_keras(model, exported, raccoon, tmp_path, outputs=SERVING_OUTPUTS):
    """Serves JPEGs, PNGs and odd-sized arrays through both signatures in a process without keras, compares each
    image's detections with `predict` after the same preprocessing, and returns `(served outputs, the encoded
    requests, the array requests)`."""
    jpegs = [open(os.path.join(raccoon, "images", name), "rb").read() for name in RACCOONS]
    photo = decode_image(jpegs[0]).numpy()
    gray_png = tf.io.encode_png(tf.image.rgb_to_grayscale(photo)).numpy()
    rgba_png = tf.io.encode_png(np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], -1)).numpy()
    encoded = jpegs + [gray_png, rgba_png]
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (2, 37, 91, 3), np.uint8), rng.integers(0, 256, (1, 301, 17, 3), np.uint8)]
    requests = tmp_path / "requests.npz"
    np.savez(requests, encoded=np.array(encoded, dtype=object), num_arrays=len(arrays),
             **{f"array{i}": a for i, a in enumerate(arrays)})
    (tmp_path / "server.py").write_text(SERVER)
    results = tmp_path / "results.npz"
    subprocess.run([sys.executable, str(tmp_path / "server.py"), exported, str(requests), str(results)],
                   check=True, timeout=300, env={**os.environ, "PYTHONPATH": ""}, cwd=str(tmp_path))
    served = dict(np.load(results))
    assert {name.split("/")[1] for name in served} == set(outputs)
    outputs = served

    for i, data in enumerate(encoded):
        image = decode_image(data).numpy()  # grayscale and RGBA come back as RGB, as the server decodes them
        assert image.shape[-1] == 3
        expected = expected_detections(model, image)
        assert_same_detections(served_pixels(outputs, "encoded", i, *image.shape[:2]), expected)
    for k, batch in enumerate(arrays):
        for i, image in enumerate(batch):
            expected = expected_detections(model, image)
            assert_same_detections(served_pixels(outputs, f"array{k}", i, *image.shape[:2]), expected)
    return outputs, encoded, arrays


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported)


def test_bad_input_gives_clear_errors_or_empty_results(loaded):
    serve = loaded.signatures["serving_default"]
    for data in (b"not an image at all", b""):
        with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format|image"):
            serve(images=tf.constant([data]))
    empty = serve(images=tf.constant([], tf.string))
    assert empty["detection_boxes"].shape == (0, 100, 4) and empty["num_detections"].shape == (0,)
    empty = loaded.signatures["image_tensor"](images=tf.zeros((0, 10, 10, 3), tf.uint8))
    assert empty["detection_scores"].shape == (0, 100)
    for channels in (1, 4):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"image_tensor: expected 3 channels \(RGB\), received {channels}"):
            loaded.signatures["image_tensor"](images=tf.zeros((1, 50, 70, channels), tf.uint8))
    tiny = serve(images=tf.constant([tf.io.encode_png(tf.fill([1, 1, 3], tf.constant(200, tf.uint8))).numpy()]))
    assert tiny["detection_boxes"].shape == (1, 100, 4)
    boxes = tiny["detection_boxes"].numpy()
    assert boxes.min() >= 0 and boxes.max() <= 1
    huge = tf.io.encode_jpeg(tf.zeros([4000, 6000, 3], tf.uint8)).numpy()
    result = serve(images=tf.constant([huge]))
    assert result["num_detections"].shape == (1,)


def test_saved_model_cli_show_and_run(exported, raccoon, tmp_path):
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    shown = subprocess.run(cli + ["show", "--dir", exported, "--all"], capture_output=True, text=True, check=True,
                           timeout=300).stdout
    assert "signature_def['serving_default']" in shown and "signature_def['image_tensor']" in shown
    assert "dtype: DT_STRING" in shown and "dtype: DT_UINT8" in shown
    for name in SERVING_OUTPUTS:
        assert f"outputs['{name}']" in shown
    # saved_model_cli run reads inputs from .npy files: a uint8 array, and JPEG bytes as a fixed-width bytes array
    # (numpy's "S" dtype needs no pickle).
    np.save(tmp_path / "array.npy", np.zeros((1, 50, 70, 3), np.uint8))
    with open(os.path.join(raccoon, "images", RACCOONS[0]), "rb") as file:
        np.save(tmp_path / "jpeg.npy", np.array([file.read()]))
    for signature, inputs in (("image_tensor", "array.npy"), ("serving_default", "jpeg.npy")):
        ran = subprocess.run(
            cli + ["run", "--dir", exported, "--tag_set", "serve", "--signature_def", signature,
                   "--inputs", f"images={tmp_path / inputs}"],
            capture_output=True, text=True, timeout=300,
        )
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert "detection_boxes" in ran.stdout and "num_detections" in ran.stdout


def test_rest_and_grpc_requests_match_the_signature(loaded, raccoon):
    sys.path.insert(0, os.path.join(ROOT, "examples", "serving"))
    try:
        import grpc_client
        import rest_client
    finally:
        sys.path.pop(0)
    path = os.path.join(raccoon, "images", RACCOONS[0])
    signature = loaded.signatures["serving_default"]
    [spec] = signature.structured_input_signature[1].values()

    body = json.loads(json.dumps(rest_client.build_body([path])))
    assert body["signature_name"] == "serving_default"
    data = base64.b64decode(body["instances"][0]["b64"])
    assert data == open(path, "rb").read()
    assert signature(images=tf.constant([data]))["num_detections"].shape == (1,)

    pytest.importorskip("tensorflow_serving.apis")
    request = grpc_client.build_request([path])
    assert request.model_spec.signature_name == "serving_default"
    assert list(request.inputs) == [spec.name] == ["images"]
    proto = request.inputs["images"]
    assert tf.dtypes.as_dtype(proto.dtype) == spec.dtype == tf.string
    assert [d.size for d in proto.tensor_shape.dim] == [1] and proto.string_val[0] == data
    assert signature(images=tf.constant(tf.make_ndarray(proto)))["num_detections"].shape == (1,)


def test_main_job_export_and_serve(model, tmp_path):
    from keras_fpn.demo import export_and_serve

    image = np.random.default_rng(1).integers(0, 256, (70, 90, 3), np.uint8)
    path, outputs, timings = export_and_serve(model, str(tmp_path), image, image_size=IMAGE_SIZE)
    assert os.path.basename(path) == "1" and set(outputs) == set(SERVING_OUTPUTS)
    expected = expected_detections(model, image)
    served = served_pixels({f"x/{k}": v for k, v in outputs.items()}, "x", 0, 70, 90)
    assert_same_detections(served, expected)  # PNG is lossless: the served image is this one
    assert set(timings) == {"export_s", "load_s", "serve_s"}


def test_serving_under_load_matches_serial_calls(loaded, raccoon):
    """8 threads x 50 requests against one loaded SavedModel (as TF Serving's worker threads share one session):
    no error, and every answer equals the serial answer for the same request."""
    from concurrent.futures import ThreadPoolExecutor

    serve = loaded.signatures["serving_default"]
    requests = [tf.constant([open(os.path.join(raccoon, "images", name), "rb").read()]) for name in RACCOONS]
    serial = [{k: v.numpy() for k, v in serve(images=request).items()} for request in requests]

    def call(index):
        outputs = serve(images=requests[index % len(requests)])
        return index, {k: v.numpy() for k, v in outputs.items()}

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, range(8 * 50)))
    assert len(answers) == 400
    for index, outputs in answers:
        expected = serial[index % len(requests)]
        for name in SERVING_OUTPUTS:
            np.testing.assert_array_equal(outputs[name], expected[name], err_msg=f"request {index}, {name}")


def test_local_server_answers_the_example_clients_like_the_signature(exported, loaded, raccoon):
    """The stand-in server speaks TF Serving's REST and gRPC predict APIs: the example clients, unchanged, get the
    signature's own answers (REST through JSON, so floats compare to float32 precision)."""
    import urllib.error
    import urllib.request

    from keras_fpn.export.local_server import LocalServer

    sys.path.insert(0, os.path.join(ROOT, "examples", "serving"))
    try:
        import grpc_client
        import rest_client
    finally:
        sys.path.pop(0)
    paths = [os.path.join(raccoon, "images", name) for name in RACCOONS[:2]]
    expected = loaded.signatures["serving_default"](images=tf.constant([open(p, "rb").read() for p in paths]))
    server = LocalServer(os.path.dirname(exported), rest_port=0, grpc_port=0).start()
    try:
        status = json.load(urllib.request.urlopen(f"{server.rest_url}/v1/models/retinanet"))
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        predictions = rest_client.predict(paths, url=server.rest_url)
        for name in SERVING_OUTPUTS:
            np.testing.assert_allclose(np.array([p[name] for p in predictions]), expected[name].numpy(), rtol=1e-6)
        columnar = urllib.request.Request(
            f"{server.rest_url}/v1/models/retinanet:predict", headers={"Content-Type": "application/json"},
            data=json.dumps({"inputs": {"images": rest_client.build_body(paths)["instances"]}}).encode())
        outputs = json.load(urllib.request.urlopen(columnar))["outputs"]
        np.testing.assert_allclose(outputs["detection_scores"], expected["detection_scores"].numpy(), rtol=1e-6)
        bad = urllib.request.Request(f"{server.rest_url}/v1/models/retinanet:predict",
                                     data=json.dumps({"instances": [{"b64": "bm90IGFuIGltYWdl"}]}).encode())
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(bad)
        assert error.value.code == 400 and "Unknown image file format" in json.load(error.value)["error"]

        pytest.importorskip("tensorflow_serving.apis")
        served = grpc_client.predict(paths, target=server.grpc_target)
        for name in SERVING_OUTPUTS:
            np.testing.assert_array_equal(served[name], expected[name].numpy())
    finally:
        server.stop()
