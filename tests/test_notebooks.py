"""The Colab notebooks run top to bottom with the small-settings switch, so they never rot."""

import pathlib
import re

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
# What a notebook must print, besides "small settings" (regular expressions).
PRINTS = {"03_export_and_serve": [r"LiteRT: [1-9]\d* detections on 4 images, as predict: True"],
          "04_coco_weights": [r"[1-9]\d* detections in a 650x417 photograph", r"\n  \w+ +0\.\d\d  \[",
                              r"classes \('raccoon',\)", r"AP50  \d\.\d{3}", "saved fasterrcnn_raccoon.keras"],
          "05_segmentation": [r"56 training and 8 held-out images; labels \[0, 1, 2, 3, 4\]",
                              r"held-out mIoU 0\.\d{3} after 20 steps", r"  line +IoU \d\.\d{3}",
                              "the SavedModel's class maps equal predict's: True; the .keras file's logits equal the model's: True"]}


def _read(path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def test_there_are_the_five_notebooks():
    assert [path.name for path in NOTEBOOKS] == ["01_feature_pyramid.ipynb", "02_finetune_voc.ipynb",
                                                 "03_export_and_serve.ipynb", "04_coco_weights.ipynb",
                                                 "05_segmentation.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_opens_with_a_colab_badge_and_an_install_cell(path):
    notebook = _read(path)
    first = notebook.cells[0]
    assert first.cell_type == "markdown"
    badge = re.search(r"\(https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/(\S+)\)",
                      first.source)
    assert badge and badge.group(2) == f"colab/{path.name}", first.source[:300]
    url = re.search(r"^url = https://github\.com/(\S+)$", (ROOT / "setup.cfg").read_text(), re.M).group(1)
    assert badge.group(1) == url, "the badge must point at the repository setup.cfg names"
    install = notebook.cells[1]
    assert install.cell_type == "code" and "pip" in install.source and f"git+https://github.com/{url}" in install.source
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit notebooks without outputs"


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the notebooks export SavedModels")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom_with_small_settings(path, raccoon, tmp_path, monkeypatch):
    text = _run_small(path, raccoon, tmp_path, monkeypatch)
    for expected in PRINTS.get(path.stem, ()):
        assert re.search(expected, text), (expected, text[-2000:])


def _run_small(path, raccoon, tmp_path, monkeypatch):
    """Runs a notebook top to bottom with its small settings; returns its printed text."""
    from nbclient import NotebookClient

    monkeypatch.setenv("KERAS_FPN_SMALL", "1")
    monkeypatch.setenv("KERAS_FPN_RACCOON", str(raccoon))
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = _read(path)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.get("outputs", []) if output.get("output_type") == "stream")
    assert "small settings" in text
    images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {})]
    assert images, "every notebook draws a picture"
    return text
