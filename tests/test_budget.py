"""Budget studies: rows from claim metrics, the CSV round trip, the "stopped moving" rule, the figure."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import tvlib.book as tvbook
from tvlib import plotting
from tvlib.book import budget

META = {"chapter": "alpha", "command": "scripts/budget_study.py x", "runtime": "1 min", "machine": "m",
        "date": "2026-12-04"}


def record(claim_id: str, **metrics) -> dict:
    return {"id": claim_id, "verdict": "partly reproduced", "metrics": metrics}


def study(values_a: list[float], values_b: list[float]) -> pd.DataFrame:
    rows = []
    for order, (a, b) in enumerate(zip(values_a, values_b)):
        rows += budget.rows([record("dong-thm1", share=a), record("dong-fig4c", ratio=b)], order,
                            ["small", "cpu", "large"][order], {"steps": 100 * (order + 1)}, 3.0)
    return pd.DataFrame(rows)


def test_rows_hold_every_metric_of_every_claim_and_the_budget():
    got = budget.rows([record("dong-thm1", share=0.5, tv=0.1)], 2, "2x", {"steps": 10, "batch": 4}, 12.34)
    assert [(r["claim"], r["metric"], r["value"]) for r in got] == [("dong-thm1", "share", 0.5), ("dong-thm1", "tv", 0.1)]
    assert got[0] | {"metric": None, "value": None} == {"order": 2, "budget": "2x", "overrides": "steps=10,batch=4",
                                                        "claim": "dong-thm1", "metric": None, "value": None,
                                                        "verdict": "partly reproduced", "wall_s": 12.3}


def test_a_claim_without_metrics_is_an_error():
    with pytest.raises(ValueError, match="claim 'dong-thm1' records no metrics"):
        budget.rows([{"id": "dong-thm1", "verdict": "reproduced"}], 0, "cpu", {}, 1.0)


def test_a_metric_recorded_twice_is_an_error():
    with pytest.raises(ValueError, match=r"metric\(s\) \['share'\] of claim 'dong-thm1' are recorded twice"):
        budget.rows([record("dong-thm1", share=0.5), record("dong-thm1", share=0.6)], 0, "cpu", {}, 1.0)
    assert len(budget.rows([record("dong-thm1", a=0.5), record("dong-thm1", b=0.6)], 0, "cpu", {}, 1.0)) == 2


def test_written_study_reads_back_with_its_header(tmp_path):
    table = study([0.5, 0.6, 0.61], [3.0, 2.0, 1.0])
    path = tmp_path / "alpha.csv"
    budget.write(path, table, META)
    back = budget.read(path.read_text())
    assert back.attrs == META
    pd.testing.assert_frame_equal(back, table.loc[:, list(budget.COLUMNS)], check_dtype=False)
    assert [p.name for p in tmp_path.iterdir()] == ["alpha.csv"]  # no temp file left behind
    with pytest.raises(ValueError, match="header lacks runtime"):
        budget.write(path, table, {k: v for k, v in META.items() if k != "runtime"})


def test_settled_compares_a_budget_with_the_largest():
    got = budget.settled(study([0.5, 0.6, 0.61], [3.0, 2.0, 1.0]), "cpu").set_index("metric")
    assert bool(got.loc["share", "settled"]) and not bool(got.loc["ratio", "settled"])
    assert (got.loc["ratio", "here"], got.loc["ratio", "largest"]) == (2.0, 1.0)
    near_zero = budget.settled(study([0.0, 0.01, 0.0], [1.0, 1.0, 1.0]), "cpu").set_index("metric")
    assert bool(near_zero.loc["share", "settled"])  # within the absolute tolerance
    with pytest.raises(ValueError, match="budget 'huge' is not in the study; valid: small, cpu, large"):
        budget.settled(study([1, 1, 1], [1, 1, 1]), "huge")


def test_unknown_study_names_the_valid_ones():
    with pytest.raises(ValueError, match="no budget study for chapter 'nope'; studies exist for: "):
        budget.load("nope")


def test_shipped_studies_load_with_their_command():
    for chapter in budget.studies():
        table = budget.load(chapter)
        assert table.attrs["chapter"] == chapter and "scripts/budget_study.py" in table.attrs["command"]
        assert list(table.columns) == list(budget.COLUMNS) and len(table)


def test_budget_figure_draws_one_panel_per_metric_and_flags_moving_ones():
    plotting.set_theme()
    fig, axes = plt.subplots(1, 3)
    drawn = plotting.budget_study(axes, study([0.5, 0.6, 0.61], [3.0, 2.0, 1.0]), marked="cpu")
    assert [ax.get_title() for ax in drawn] == ["dong-thm1: share", "dong-fig4c: ratio (still moving)"]
    curve, dot = drawn[1].get_lines()
    assert list(curve.get_ydata()) == [3.0, 2.0, 1.0] and list(dot.get_xdata()) == [1] and list(dot.get_ydata()) == [2.0]
    assert [t.get_text() for t in drawn[0].get_xticklabels()] == ["small", "cpu", "large"]
    assert not axes[2].get_visible()
    with pytest.raises(ValueError, match="2 metrics, 1 axes"):
        plotting.budget_study(axes[:1], study([1, 1, 1], [1, 1, 1]), marked="cpu")
    plt.close(fig)


def test_a_budget_outside_the_study_is_drawn_unmarked_and_said_so():
    plotting.set_theme()
    fig, axes = plt.subplots(1, 2)
    drawn = plotting.budget_study(axes, study([0.5, 0.6, 0.61], [3.0, 2.0, 1.0]), marked="tiny")
    assert [len(ax.get_lines()) for ax in drawn] == [1, 1] and "still moving" not in drawn[1].get_title()
    plt.close(fig)
    assert budget.summary(study([1, 1, 1], [1, 1, 1]), "tiny") == (
        "this profile's budget tiny is not in the study (budgets: small, cpu, large), so the study says nothing about it")


def test_summary_names_the_metrics_still_moving():
    assert budget.summary(study([0.5, 0.6, 0.61], [3.0, 2.0, 1.0]), "cpu") == (
        "at cpu: 1 of 2 metrics have stopped moving; still moving: dong-fig4c ratio (2.000 here, 1.000 at the largest)")
    assert budget.summary(study([0.5, 0.6, 0.61], [3.0, 2.0, 1.0]), "large").endswith("still moving: none")


def test_claim_emits_its_metrics_as_numbers(monkeypatch):
    shown = []
    monkeypatch.setattr("tvlib.book.chapter._display", lambda md, mime, payload: shown.append(payload))
    tvbook.start("alpha", "quick", "cpu", 0)
    tvbook.claim("dong-thm1", "m", "reproduced", "c", metrics={"share": 1})
    tvbook.claim("dong-thm2", "m", "reproduced", "c")
    assert shown[0]["metrics"] == {"share": 1.0} and isinstance(shown[0]["metrics"]["share"], float)
    assert "metrics" not in shown[1]
