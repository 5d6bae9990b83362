"""The model zoo: records load, build the models they describe, match their figures, and ship in the package."""

import importlib.util
import json
import pathlib
import subprocess
import sys
import zipfile

import keras
import pytest

from keras_fpn import RetinaNet, models

ROOT = pathlib.Path(__file__).resolve().parents[1]
REQUIRED = ("retinanet_resnet50_fpn", "retinanet_resnet101_fpn", "retinanet_mobilenetv3large_fpn",
            "retinanet_efficientnetv2b0_fpn", "retinanet_convnext_tiny_fpn", "retinanet_mobilenetv3small_shapes",
            "fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenetv3small_shapes", "maskrcnn_resnet50_fpn",
            "maskrcnn_mobilenetv3small_shapes")
# The models trained here, and the command that measured their AP.
TRAINED = {
    "retinanet_mobilenetv3small_shapes": "bash scripts/main_job.sh",
    "fasterrcnn_mobilenetv3small_shapes": "keras-fpn train --model fasterrcnn_mobilenetv3small_shapes --dataset shapes "
                                          "--output-dir runs/frcnn_shapes && keras-fpn evaluate runs/frcnn_shapes "
                                          "--dataset shapes",
    "maskrcnn_mobilenetv3small_shapes": "keras-fpn train --model maskrcnn_mobilenetv3small_shapes --dataset shapes "
                                        "--output-dir runs/mask_shapes && keras-fpn evaluate runs/mask_shapes "
                                        "--dataset shapes",
    "retinanet_mobilenetv3large_fpnlite_shapes": "keras-fpn train --model retinanet_mobilenetv3large_fpnlite_shapes "
                                                 "--dataset shapes --epochs 15 --steps-per-epoch 100 --max-images 2000 "
                                                 "--eval-every 0 --seed 0 --output-dir runs/mobile && keras-fpn evaluate "
                                                 "runs/mobile --dataset shapes --max-images 200",
}


def _zoo_table_script():
    spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "scripts" / "zoo_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_zoo_lists_every_record_in_models_folder():
    names = models.list()
    assert set(REQUIRED) <= set(names)
    assert names == sorted(path.stem for path in (ROOT / "models").glob("*.json"))


@pytest.mark.parametrize("name", REQUIRED)
def test_record_builds_its_model_with_the_recorded_parameter_count(name):
    record = models.get(name)
    model = models.build(name, backbone_weights=None)
    assert type(model).__name__ == {"retinanet": "RetinaNet", "fasterrcnn": "FasterRCNN", "maskrcnn": "MaskRCNN"}[
        record.get("architecture", "retinanet")]
    assert model.num_classes == record["num_classes"]
    assert model.backbone.min_level == record["pyramid"]["min_level"]
    assert model.backbone.max_level == record["pyramid"]["max_level"]
    if "head" in record:
        assert model.head_depth == record["head"]["depth"] and model.head_filters == record["head"]["filters"]
    for key, value in record.get("roi_heads", {}).items():
        if key in ("pool_size", "sampling_ratio", "head_dim", "box_weights"):
            assert getattr(model, key) == (tuple(value) if isinstance(value, list) else value), key
        elif key != "source":
            assert getattr(model, f"roi_{key}") == value, key
    for key, value in record.get("rpn", {}).items():
        if key != "source":
            assert getattr(model, f"rpn_{key}") == value, key
    for key, value in record.get("mask_head", {}).items():
        if key != "source":
            assert getattr(model, {"pool_size": "mask_pool_size", "filters": "mask_head_filters",
                                   "depth": "mask_head_depth"}[key]) == value, key
    assert model.anchor_scale == record["anchors"]["size"]
    figures = record["figures"]
    assert figures["parameters"] == model.count_params(), "re-run python benchmarks/zoo_figures.py --write"
    assert figures["measured_with"] and figures["machine"]
    assert figures["gflops"] > 0 and figures["cpu_latency_ms"] > 0


def test_table_in_models_readme_is_up_to_date():
    script = _zoo_table_script()
    text = (ROOT / "models" / "README.md").read_text()
    assert script.render(text) == text, "models/README.md is out of date: run python scripts/zoo_table.py"
    for name in REQUIRED:
        assert f"[`{name}`]({name}.json)" in text


def test_table_changes_when_a_record_changes(monkeypatch):
    script = _zoo_table_script()
    text = (ROOT / "models" / "README.md").read_text()
    real_get = models.get

    def changed(name):
        record = real_get(name)
        if name == "retinanet_resnet50_fpn":
            record["figures"]["gflops"] = 1.0
        return record

    monkeypatch.setattr(models, "get", changed)
    assert script.render(text) != text


def test_only_the_trained_segmenters_claim_an_miou():
    for name in models.list():
        miou = models.get(name)["figures"].get("miou")
        if name.endswith("_shapes") and models.get(name).get("architecture") in ("semanticfpn", "unet"):
            short = name.split("_")[0]
            assert 0 < miou["mIoU"] < miou["pixel_accuracy"] <= 1
            assert miou["measured_with"] == (f"keras-fpn train --model {name} --dataset shapes --output-dir runs/{short}"
                                             f" && keras-fpn evaluate runs/{short} --dataset shapes")
        else:
            assert miou is None, f"{name} claims an mIoU"


def test_only_the_trained_model_claims_an_ap():
    for name in models.list():
        ap = models.get(name)["figures"]["ap"]
        if name in TRAINED:
            assert 0 < ap["AP"] < ap["AP50"] <= 1 and ap["measured_with"] == TRAINED[name]
        else:
            assert ap is None, f"{name} was not trained here"


def test_build_picks_the_class_a_record_names_and_from_preset_refuses_another():
    from keras_fpn import FasterRCNN

    assert isinstance(models.build("fasterrcnn_mobilenetv3small_shapes", num_classes=2), FasterRCNN)
    with pytest.raises(ValueError, match="is a fasterrcnn record; build it with keras_fpn.models.build"):
        RetinaNet.from_preset("fasterrcnn_mobilenetv3small_shapes")
    record = models.get("fasterrcnn_mobilenetv3small_shapes")
    record["head"] = {"filters": 8}
    with pytest.raises(ValueError, match=r"unknown fields \['head'\]"):
        models._check(record, "mine")


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"'retinanet_resnet50'.*Did you mean 'retinanet_resnet50_fpn'"):
        models.get("retinanet_resnet50")


def test_get_returns_a_copy():
    models.get("retinanet_resnet50_fpn")["pyramid"]["num_channels"] = 1
    assert models.get("retinanet_resnet50_fpn")["pyramid"]["num_channels"] == 256


def test_own_record_file_and_overrides(tmp_path):
    record = models.get("retinanet_mobilenetv3small_shapes")
    record.update(name="mine", num_classes=5)
    record["pyramid"]["num_channels"] = 32
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(record))
    model = RetinaNet.from_preset(str(path), score_threshold=0.2)
    assert model.num_classes == 5 and model.backbone.num_channels == 32 and model.score_threshold == 0.2
    assert RetinaNet.from_preset(str(path), num_classes=2).num_classes == 2


def test_records_can_state_the_papers_ablations():
    from keras_fpn.detection.faster_rcnn import FasterRCNN

    record = models.get("fasterrcnn_mobilenetv3small_shapes")
    record["pyramid"].update(top_down=False, lateral=True)
    record["rpn"].update(min_level=2, max_level=2)
    kwargs = models.record_kwargs(models._check(record, "ablation"))
    assert kwargs["backbone_kwargs"]["pyramid_kwargs"] == {"fusion": "sum", "extra_levels_from": "subsample",
                                                            "norm": None, "top_down": False, "lateral": True}
    assert (kwargs["rpn_min_level"], kwargs["rpn_max_level"]) == (2, 2)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("backbone"), r"missing fields \['backbone'\]"),
    (lambda r: r.update(backbones={}), r"unknown fields \['backbones'\]"),
    (lambda r: r["pyramid"].update(channels=8), r"unknown pyramid fields \['channels'\]"),
    (lambda r: r.update(num_classes="80"), r"field 'num_classes' is a str; expected int"),
    (lambda r: r.update(input_size=[640]), r"input_size is \[640\]"),
])
def test_bad_records_are_named(tmp_path, change, message):
    record = models.get("retinanet_resnet50_fpn")
    change(record)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=message):
        models.load_record(str(path))


def test_not_json_is_reported(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{'name': ")
    with pytest.raises(ValueError, match="not valid JSON"):
        models.get(str(path))


@pytest.mark.slow
def test_records_ship_in_the_wheel(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True)
    wheel = next(tmp_path.glob("keras_fpn-*.whl"))
    shipped = {pathlib.PurePosixPath(name).name for name in zipfile.ZipFile(wheel).namelist()
               if name.startswith("keras_fpn/zoo/")}
    assert shipped == {f"{name}.json" for name in models.list()}


def test_preset_model_trains_one_step():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("decoding uses TensorFlow's NMS")
    model = RetinaNet.from_preset("retinanet_mobilenetv3small_shapes", num_classes=2)
    model.compile(optimizer="adam")
    images = keras.random.uniform((2, 64, 64, 3), 0, 255)
    y = {"boxes": [[[4.0, 4.0, 40.0, 30.0]], [[10.0, 12.0, 60.0, 50.0]]], "labels": [[0], [1]]}
    logs = model.train_on_batch(images, y, return_dict=True)
    assert logs["loss"] > 0 and int(model.optimizer.iterations.numpy()) == 1


def test_the_model_code_never_imports_the_zoo_or_the_trainer():
    """The zoo and the training loop depend on the models, never the reverse: `from_preset` reaches the zoo through
    `keras_fpn.presets`, where `keras_fpn.models` registers itself."""
    import ast

    forbidden = ("keras_fpn.models", "keras_fpn.training", "keras_fpn.cli")
    found = []
    for package in ("detection", "layers", "backbones", "ops", "segmentation"):
        for path in sorted((ROOT / "keras_fpn" / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names
                          if name.startswith(forbidden)]
    assert not found, found


def test_from_preset_without_a_registered_zoo_names_the_fix(monkeypatch):
    from keras_fpn import presets

    monkeypatch.setattr(presets, "_preset_arguments", None)
    with pytest.raises(RuntimeError, match=r"RetinaNet.from_preset\('retinanet_resnet50_fpn'\): no model zoo is "
                                           r"registered. `import keras_fpn`"):
        RetinaNet.from_preset("retinanet_resnet50_fpn")


@pytest.mark.parametrize("name, class_name", [("semanticfpn_mobilenetv3small_shapes", "SemanticFPN"),
                                              ("unet_mobilenetv3small_shapes", "UNet")])
def test_segmentation_records_build_their_model(name, class_name):
    record = models.get(name)
    model = models.build(name)
    assert type(model).__name__ == class_name and model.num_classes == record["num_classes"]
    assert (model.min_level, model.max_level) == (record["pyramid"]["min_level"], record["pyramid"]["max_level"])
    if "head" in record:
        assert model.head_filters == record["head"]["filters"] and model.head_norm == record["head"]["norm"]
        assert model.num_channels == record["pyramid"]["num_channels"]
    else:
        assert model.decoder_filters == tuple(record["decoder"]["filters"])
    assert model.count_params() == record["figures"]["parameters"], "re-run python benchmarks/zoo_figures.py --write"
    with pytest.raises(ValueError, match=f"{name} is a {record['architecture']} record"):
        RetinaNet.from_preset(name)
