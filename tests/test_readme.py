"""The examples of the README and of its docs pages run, and print what the pages say they print."""

import ast
import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def docs_text():
    """The README, then every page under docs/: the examples are looked up in this order."""
    return "\n".join(page.read_text() for page in PAGES)


def test_readme_example_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", docs_text(), re.S)
    example = blocks[0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example, "README.md", "exec"), {})
    first_line = printed.getvalue().splitlines()[0]
    promised = re.search(r"^# (\{'P3'.*\})$", example, re.M).group(1)
    assert ast.literal_eval(first_line) == ast.literal_eval(promised)


def run_python_example(containing, skip_reason):
    """Runs the README's first ```python block that contains `containing` (TensorFlow backend only); returns
    the names it defined."""
    import keras
    import pytest

    if keras.backend.backend() != "tensorflow":
        pytest.skip(skip_reason)
    example = next(b for b in re.findall(r"```python\n(.*?)```", docs_text(), re.S) if containing in b)
    namespace = {}
    exec(compile(example, f"README.md ({containing} example)", "exec"), namespace)
    return namespace


def test_readme_retinanet_example_runs():
    namespace = run_python_example("RetinaNet(", "RetinaNet decoding uses TensorFlow's NMS")
    detections = namespace["detections"]
    assert detections["boxes"].shape == (8, 100, 4) and detections["num_detections"].shape == (8,)


def test_readme_faster_rcnn_example_runs():
    namespace = run_python_example("FasterRCNN(", "proposals, RoIAlign and NMS use TensorFlow ops")
    detections = namespace["detections"]
    assert detections["boxes"].shape == (8, 100, 4) and detections["num_detections"].shape == (8,)


def test_readme_data_example_runs(raccoon, tmp_path, monkeypatch):
    import keras
    import pytest

    if keras.backend.backend() != "tensorflow":
        pytest.skip("RetinaNet decoding uses TensorFlow's NMS")
    example = next(b for b in re.findall(r"```python\n(.*?)```", docs_text(), re.S) if "load_voc(" in b)
    assert '"../shared/datasets/raccoon"' in example
    monkeypatch.chdir(tmp_path)  # the example writes detections.png into the working directory
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        namespace = {}
        exec(compile(example.replace("../shared/datasets/raccoon", raccoon), "README.md", "exec"), namespace)
    assert "('raccoon',) 200" in printed.getvalue()
    assert set(namespace["metrics"]) >= {"AP", "AP50", "AR100", "AP/raccoon"}
    assert (tmp_path / "detections.png").exists()


def test_readme_zoo_example_runs():
    import keras
    import pytest

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the zoo is RetinaNet, whose decoding uses TensorFlow's NMS")
    example = next(b for b in re.findall(r"```python\n(.*?)```", docs_text(), re.S) if "from_preset(" in b)
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(example, "README.md", "exec"), namespace)
    assert "retinanet_resnet50_fpn" in printed.getvalue()
    assert namespace["model"].num_classes == 2 and namespace["record"]["backbone"]["application"] == "ResNet50"


def test_readme_command_line_example_runs_as_written(tmp_path, monkeypatch, capsys):
    import json
    import shlex

    import keras
    import pytest

    from keras_fpn import cli

    if keras.backend.backend() != "tensorflow":
        pytest.skip("RetinaNet decoding uses TensorFlow's NMS")
    block = next(b for b in re.findall(r"```bash\n(.*?)```", docs_text(), re.S) if "keras-fpn train" in b)
    lines = [line for line in block.splitlines() if line.startswith("keras-fpn ")]
    assert [shlex.split(line)[1] for line in lines] == ["models", "train", "evaluate", "export", "predict"]
    monkeypatch.chdir(tmp_path)  # the example writes into runs/
    # The image the main job writes as runs/demo/example.png (a held-out shapes image).
    from keras_fpn.datasets import generate_shapes
    from PIL import Image

    (tmp_path / "runs/demo").mkdir(parents=True)
    Image.fromarray(generate_shapes(1, 128, seed=5)[0][0]).save(tmp_path / "runs/demo/example.png")
    for line in lines:
        argv = shlex.split(line)[1:]
        assert cli.main(argv) == 0, line
    assert re.search(r"^AP50\s+\d\.\d{3}$", capsys.readouterr().out, re.M)
    assert (tmp_path / "runs/shapes/export/1/saved_model.pb").exists()
    assert json.loads((tmp_path / "runs/shapes/detections.json").read_text())[0]["image"].endswith("example.png")
    assert (tmp_path / "runs/shapes/detections.png").exists()


def test_readme_export_commands_are_the_command_lines():
    """The README's LiteRT / ONNX commands parse with `keras-fpn export`'s options (what those exports give is
    tests/export/test_formats.py's, the int8 one from the command line included)."""
    import shlex

    from keras_fpn.cli import build_parser

    block = next(b for b in re.findall(r"```bash\n(.*?)```", docs_text(), re.S) if "--format onnx" in b)
    lines = [line.split("#")[0] for line in block.splitlines() if line.startswith("keras-fpn export ")]
    parsed = [build_parser().parse_args(shlex.split(line)[1:]) for line in lines]
    assert [(args.format, args.quantize) for args in parsed] == [("litert", None), ("litert", "int8"), ("onnx", None)]


def test_readme_bfloat16_example_runs(tmp_path, monkeypatch):
    import keras
    import pytest

    if keras.backend.backend() != "tensorflow":
        pytest.skip("RetinaNet decoding uses TensorFlow's NMS")
    from keras_fpn.export import export_saved_model
    from tests.testing import tiny_retinanet

    example = next(b for b in re.findall(r"```python\n(.*?)```", docs_text(), re.S) if "with_dtype(" in b)
    model = tiny_retinanet(2)  # any image size: the example exports for 640x640
    namespace = {"model": model, "images": keras.random.uniform((2, 64, 64, 3), 0, 255, seed=0),
                 "export_saved_model": export_saved_model}
    monkeypatch.chdir(tmp_path)  # the example exports into runs/
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["detections"]["boxes"].shape == (2, 100, 4)
    assert (tmp_path / "runs/export_bf16/1/saved_model.pb").exists()


def test_readme_heads_as_arguments_example_runs():
    model = run_python_example("box_head=", "proposals, RoIAlign and NMS use TensorFlow ops")["model"]
    assert model.roi_heads.box_head.representation_size == 256
    # The head is part of the configuration: a model rebuilt from it has the same head.
    rebuilt = type(model).from_config(model.get_config())
    assert rebuilt.roi_heads.box_head.representation_size == 256
    assert rebuilt.count_params() == model.count_params()


def test_the_modules_the_readme_uses_are_attributes_after_import():
    import keras_fpn

    for name in ("datasets", "evaluation", "visualization", "models", "training", "ops", "utils", "detection"):
        assert getattr(keras_fpn, name).__name__ == f"keras_fpn.{name}"


def test_readme_mask_rcnn_example_runs():
    namespace = run_python_example("MaskRCNN(", "proposals, RoIAlign and NMS use TensorFlow ops")
    assert namespace["detections"]["masks"].shape == (8, 100, 28, 28)
    assert tuple(namespace["masks"].shape) == (8, 100, 128, 128)


def test_every_relative_link_of_the_docs_resolves():
    broken = []
    for page in [*PAGES, ROOT / "benchmarks" / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
