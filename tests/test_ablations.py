"""benchmarks/ablations.py: every row is the paper's change and nothing else; its report says what held.

The rows themselves train in CI through `scripts/bench.sh --tiny` (`ablations.py --tiny`); these tests need no
training.
"""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablations():
    spec = importlib.util.spec_from_file_location("ablations", ROOT / "benchmarks" / "ablations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def anchor_sizes(kwargs):
    """Anchor sides in pixels over the levels the RPN runs on (FasterRCNN's defaults where a row sets none)."""
    levels = range(kwargs.get("rpn_min_level", kwargs["min_level"]),
                   kwargs.get("rpn_max_level", kwargs["max_level"]) + 1)
    scales = kwargs.get("anchor_scales", (1.0,))
    return sorted(kwargs["anchor_scale"] * 2 ** level * scale for level in levels for scale in scales)


def test_every_row_has_the_same_anchor_sizes_and_differs_from_fpn_only_where_the_paper_does(ablations):
    base = ablations.row_kwargs("rpn_fpn", ablations.FULL)
    assert anchor_sizes(base) == [8, 16, 32, 64, 128]
    for name in ablations.ROWS:
        kwargs = ablations.row_kwargs(name, ablations.FULL)
        assert anchor_sizes(kwargs) == [8, 16, 32, 64, 128], name
        assert kwargs["rpn_only"] == name.startswith("rpn_")
        changed = {key for key in kwargs if kwargs[key] != base.get(key)} - {"rpn_only"}
        expected = {
            "rpn_c4": {"min_level", "max_level", "anchor_scale", "anchor_scales", "roi_min_level", "roi_max_level"},
            "rpn_bottom_up": {"backbone_kwargs"}, "rpn_no_lateral": {"backbone_kwargs"},
            "rpn_p2_only": {"rpn_min_level", "rpn_max_level", "anchor_scales"},  # anchor_scale already 2
        }
        expected["rpn_c5"] = expected["frcnn_c4"] = expected["rpn_c4"]
        assert changed == expected.get(name, set()), name
    for name, switch in (("rpn_bottom_up", "top_down"), ("rpn_no_lateral", "lateral")):
        assert ablations.row_kwargs(name, ablations.FULL)["backbone_kwargs"]["pyramid_kwargs"][switch] is False


def entry(**metrics):
    return {"metrics": metrics, "training_s": 100.0}


def test_report_states_each_ordering_against_the_seed_spread(ablations):
    results = {
        "rpn_fpn": {"0": entry(AR100=0.40, AR1k=0.60), "1": entry(AR100=0.41, AR1k=0.62)},
        "rpn_c5": {"0": entry(AR100=0.20, AR1k=0.30), "1": entry(AR100=0.22, AR1k=0.35)},
        "rpn_bottom_up": {"0": entry(AR100=0.40, AR1k=0.61), "1": entry(AR100=0.39, AR1k=0.58)},
        "frcnn_fpn": {"0": entry(AP=0.30, AP50=0.5)},
        "frcnn_c4": {"0": entry(AP=0.32, AP50=0.5)},
    }
    text = ablations.report(results)
    assert "| `rpn_fpn` | (c) FPN | 40.5 (40.0-41.0) | 61.0 (60.0-62.0) |" in text
    assert "| `rpn_c4` | (a) baseline on conv4 | not run |" in text
    assert "FPN 61.0 vs `rpn_c5` 32.5: FPN above, beyond every seed's value (paper: 56.3 vs 44.9, FPN above)" in text
    assert "FPN 61.0 vs `rpn_bottom_up` 59.5: FPN above on average, within the seeds' spread" in text
    assert "FPN 30.0 vs `frcnn_c4` 32.0: FPN below (one seed each: no spread) (paper: 33.9 vs 31.6" in text
