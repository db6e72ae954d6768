"""The LLM and linear-model figures of tvlib.plotting: what they draw, read back from the axes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from tvlib import plotting  # noqa: E402


def test_accuracy_by_layer_draws_each_curve_at_its_layers_and_icl_dashed():
    fig, ax = plt.subplots()
    plotting.accuracy_by_layer(ax, [0, 5, 10], {"TaskV": [0.0, 1.0, 0.5], "add": [0.25, 0.5, 0.5]}, icl=0.75,
                               title="task")
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["TaskV", "add", "ICL"]
    assert lines[0].get_xdata().tolist() == [0, 5, 10] and lines[1].get_ydata().tolist() == [0.25, 0.5, 0.5]
    assert list(lines[2].get_ydata()) == [0.75, 0.75] and lines[2].get_linestyle() == "--"
    assert ax.get_ylim() == (-0.05, 1.05) and ax.get_title() == "task" and ax.get_xlabel() == "injection layer"
    plt.close(fig)


def test_accuracy_by_layer_without_icl_and_a_clear_error_for_a_short_curve():
    fig, ax = plt.subplots()
    plotting.accuracy_by_layer(ax, range(3), {"a": [0.1, 0.2, 0.3]}, xlabel="layer l")
    assert [line.get_label() for line in ax.get_lines()] == ["a"] and ax.get_xlabel() == "layer l"
    with pytest.raises(ValueError, match="curve 'b' has 2 values for 3 layers"):
        plotting.accuracy_by_layer(ax, range(3), {"b": [0.1, 0.2]})
    plt.close(fig)
