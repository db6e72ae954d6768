"""tvlib.plotting: what each standard figure draws (line data, reference lines, bars, hatching)."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.container import BarContainer

from tvlib import plotting
from tvlib.analysis import LayerSweep


@pytest.fixture
def ax():
    plotting.set_theme()
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def lines(ax) -> dict:
    """Every line on ``ax`` by its label."""
    return {line.get_label(): line for line in ax.get_lines()}


def is_hline(line, y: float) -> bool:
    return list(line.get_ydata()) == [y, y] and list(line.get_xdata()) == [0, 1]


SWEEPS = {"a": LayerSweep([0.6, 0.3, 0.5], zero_shot=0.8, icl=0.2),
          "b": LayerSweep([[0.7, 0.6], [0.5, 0.4]], zero_shot=[0.9, 0.7], icl=[0.3, 0.1])}


def test_quality_by_layer_draws_each_mean_curve_and_its_references(ax):
    plotting.quality_by_layer(ax, SWEEPS)
    drawn = lines(ax)
    assert set(drawn) == {"TaskV, a", "ICL, a", "zero-shot, a", "TaskV, b", "ICL, b", "zero-shot, b"}
    np.testing.assert_allclose(drawn["TaskV, a"].get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(drawn["TaskV, a"].get_ydata(), [0.6, 0.3, 0.5])
    np.testing.assert_allclose(drawn["TaskV, b"].get_ydata(), [0.6, 0.5])  # the mean over two seeds
    assert is_hline(drawn["ICL, b"], 0.2) and is_hline(drawn["zero-shot, b"], 0.8)
    assert drawn["ICL, a"].get_linestyle() == "--" and drawn["zero-shot, a"].get_linestyle() == ":"
    assert drawn["ICL, b"].get_color() == drawn["TaskV, b"].get_color() != drawn["TaskV, a"].get_color()
    [band] = [c for c in ax.collections if isinstance(c, PolyCollection)]  # only b has several seeds
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.4) and ys.max() == pytest.approx(0.7)  # mean ± std: 0.6 ± 0.1, 0.5 ± 0.1


def test_quality_by_layer_first_references_normalised_depth_and_accuracy(ax):
    plotting.quality_by_layer(ax, SWEEPS, references="first", normalise_depth=True, accuracy=True)
    drawn = lines(ax)
    assert set(drawn) == {"TaskV, a", "ICL, a", "zero-shot, a", "TaskV, b"}
    assert to_rgba(drawn["ICL, a"].get_color()) == to_rgba("k")
    assert to_rgba(drawn["zero-shot, a"].get_color()) == to_rgba("grey")
    assert is_hline(drawn["ICL, a"], pytest.approx(0.8))  # 1 - error
    np.testing.assert_allclose(drawn["TaskV, a"].get_xdata(), [0, 0.5, 1])
    np.testing.assert_allclose(drawn["TaskV, b"].get_xdata(), [0, 1])
    np.testing.assert_allclose(drawn["TaskV, a"].get_ydata(), [0.4, 0.7, 0.5])
    assert ax.get_xlabel() == "injection layer / (depth - 1)"


def test_quality_by_layer_without_references(ax):
    plotting.quality_by_layer(ax, SWEEPS, references="none")
    assert set(lines(ax)) == {"TaskV, a", "TaskV, b"}
    with pytest.raises(ValueError, match="references 'all' is not one of each, first, none"):
        plotting.quality_by_layer(ax, SWEEPS, references="all")


def test_error_curves_draws_models_baselines_and_markers(ax):
    plotting.error_curves(ax, {"model": [0.8, 0.4, 0.2]}, {"least squares": [1.0, 0.5, 0.0]},
                          trained_context=1, chance=0.5)
    drawn = lines(ax)
    np.testing.assert_allclose(drawn["model"].get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(drawn["model"].get_ydata(), [0.8, 0.4, 0.2])
    base = drawn["least squares"]
    np.testing.assert_allclose(base.get_ydata(), [1.0, 0.5, 0.0])
    assert (base.get_linestyle(), base.get_marker(), to_rgba(base.get_color())) == ("--", "s", to_rgba("k"))
    assert drawn["model"].get_marker() == "o" and drawn["model"].get_linestyle() == "-"
    assert list(drawn["trained context"].get_xdata()) == [1, 1]
    assert is_hline(drawn["chance"], 0.5) and drawn["chance"].get_linestyle() == ":"


def test_error_curves_takes_x_and_rejects_mismatched_lengths(ax):
    plotting.error_curves(ax, {"TaskV": [0.5, 0.4]}, x=[2, 8])
    np.testing.assert_allclose(lines(ax)["TaskV"].get_xdata(), [2, 8])
    assert set(lines(ax)) == {"TaskV"}
    with pytest.raises(ValueError, match=r"curves \{'b': 3\} do not have one value per x \(2 values\)"):
        plotting.error_curves(ax, {"a": [0.5, 0.4]}, {"b": [1, 2, 3]})


def test_smooth_is_a_running_mean():
    np.testing.assert_allclose(plotting.smooth([1, 2, 3, 4], 2), [1.5, 2.5, 3.5])
    np.testing.assert_allclose(plotting.smooth([1, 2, 3], 10), [2.0])  # the window shrinks to the series
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        plotting.smooth([1, 2], 0)


def test_loss_curves_smooth_each_log_and_name_the_window(ax):
    logs = {"long": [{"icl": v} for v in (4.0, 2.0, 3.0, 1.0)], "short": [{"icl": v} for v in (1.0, 3.0, 5.0)]}
    plotting.loss_curves(ax, logs, window=50, ylabel="ICL loss")
    drawn = lines(ax)
    np.testing.assert_allclose(drawn["long"].get_ydata(), [3.0, 2.0])  # 3-step means: the shortest log
    np.testing.assert_allclose(drawn["short"].get_ydata(), [3.0])
    assert ax.get_ylabel() == "ICL loss (3-step mean)"
    with pytest.raises(ValueError, match="non-empty logs"):
        plotting.loss_curves(ax, {"empty": []})


def test_position_heatmap_centres_the_colours_and_marks_the_mask(ax):
    matrix = np.array([[1.0, -3.0], [0.5, 2.0]])
    plotting.position_heatmap(ax, matrix, "W", mask=[[True, False], [False, True]])
    [image] = ax.get_images()
    np.testing.assert_allclose(image.get_array(), matrix)
    assert image.get_clim() == (-3.0, 3.0)
    [dots] = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(dots.get_offsets(), [[0, 0], [1, 1]])  # (column, row) of each allowed entry
    assert ax.get_title() == "W" and len(ax.figure.axes) == 2  # with its colour bar
    with pytest.raises(ValueError, match=r"mask shape \(1, 2\) differs from the matrix's \(2, 2\)"):
        plotting.position_heatmap(ax, matrix, "W", mask=[[True, False]])


def test_grouped_bars_heights_positions_and_hatching(ax):
    plotting.grouped_bars(ax, ["L = 2", "L = 3"], {"ours": [0.1, 0.2], "paper": [0.3, 0.4]},
                          errors={"ours": [0.01, 0.02]}, hatched=["paper"])
    ours, paper = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_height() for b in ours] == [0.1, 0.2] and [b.get_height() for b in paper] == [0.3, 0.4]
    assert [b.get_x() + b.get_width() / 2 for b in ours] == pytest.approx([-0.2, 0.8])
    assert [b.get_x() + b.get_width() / 2 for b in paper] == pytest.approx([0.2, 1.2])
    assert all(b.get_hatch() == "//" for b in paper) and not any(b.get_hatch() for b in ours)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["L = 2", "L = 3"]
    assert ours.errorbar is not None and paper.errorbar is None


@pytest.mark.parametrize("kw, match", [
    (dict(series={"a": [1.0]}), r"series 'a' has 1 values for 2 groups"),
    (dict(series={"a": [1.0, 2.0]}, errors={"a": [0.1]}), r"series 'a' has 1 errors for 2 groups"),
    (dict(series={"a": [1.0, 2.0]}, hatched=["paper"]), r"\['paper'\] are not series; series: a"),
])
def test_grouped_bars_rejects_bad_input(ax, kw, match):
    with pytest.raises(ValueError, match=match):
        plotting.grouped_bars(ax, ["x", "y"], **kw)


def test_paper_markers_sit_on_their_bars_and_skip_unmeasured_groups(ax):
    series = ["S", "P", "T"]
    plotting.grouped_bars(ax, ["5", "10"], {name: [1.0, 2.0] for name in series})
    plotting.paper_markers(ax, ["5", "10"], series, {("S", "5"): 0.5, ("P~T", "10"): 0.7, ("S", "30"): 9.0})
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "paper (approx.)"]
    assert list(line.get_xdata()) == pytest.approx([-0.8 / 3, 1 + 0.4 / 3])  # S's bar; midway between P (0) and T
    assert list(line.get_ydata()) == [0.5, 0.7]  # n = 30 was not measured: skipped
    assert line.get_marker() == "D" and line.get_linestyle() == "None"
    assert "paper (approx.)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_paper_markers_reject_an_unknown_series(ax):
    with pytest.raises(ValueError, match=r"paper series \['Q'\] are not bar series; series: S, P"):
        plotting.paper_markers(ax, ["5"], ["S", "P"], {("P~Q", "5"): 1.0})


def test_taskv_icl_ratios_one_marker_per_row_offset_by_source(ax):
    import pandas as pd

    frame = pd.DataFrame({"model": ["M1", "M1", "M2", "ours"], "kind": ["one-way", "bijection", "bijection", "bijection"],
                          "source": ["paper", "paper", "paper", "us"], "ratio": [0.9, 0.5, 0.3, 0.7]})
    plotting.taskv_icl_ratios(ax, frame)
    got = lines(ax)
    assert {k for k in got if not k.startswith("_")} == {"paper: one-way", "paper: bijection", "us: bijection"}
    assert list(got["paper: bijection"].get_xdata()) == pytest.approx([-0.2, 0.8])  # two sources: offsets -/+0.2
    assert list(got["paper: bijection"].get_ydata()) == [0.5, 0.3]
    assert list(got["us: bijection"].get_xdata()) == pytest.approx([2.2]) and got["paper: one-way"].get_marker() == "s"
    assert got["paper: one-way"].get_markerfacecolor() == "none"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["M1", "M2", "ours"]
    with pytest.raises(ValueError, match=r"kinds \['both'\] are not one of one-way, bijection"):
        plotting.taskv_icl_ratios(ax, frame.assign(kind="both"))
