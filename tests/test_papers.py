"""The papers' numbers as data: every table loads with its citation, shape and sane values."""

import pandas as pd
import pytest

from tvlib import papers

MODELS = ["GPT-J", "Pythia-6.9B", "Pythia-12B", "Llama-7B", "Llama-13B", "Qwen3-8B", "Llama3-8B"]
BIJECTIONS = ["lower_upper", "english_french", "english_italian", "english_spanish", "present_gerund",
              "present_past", "present_past_perfect", "singular_plural", "antonym"]
CATEGORIES = ["Knowledge", "Algorithmic", "Translation", "Linguistic", "Bijection", "Average"]
COLUMNS = {
    "dong2025_table1": ["model", "task", "label", "domain", "direction", "n", "icl", "tv"],
    "dong2025_table8": ["model", "task", "label", "n", "icl", "tv"],
    "dong2025_table9": ["model", "task", "label", "n", "icl", "tv"],
    "dong2025_table2": ["model", "n_shots", "method", "category", "mean", "std"],
    "dong2025_table6": ["model", "n_shots", "method", "category", "mean", "std"],
    "dong2025_table7": ["model", "n_shots", "method", "category", "mean", "std"],
    "dong2025_fig4a": ["series", "layout", "L", "n", "risk"],
    "dong2025_fig4b": ["series", "layout", "L", "n", "risk"],
    "dong2025_fig4c": ["series", "L", "risk"],
    "dong2025_fig3": ["quantity", "value"],
}
SOURCES = {"dong2025_table1": ("Table 1", 7), "dong2025_table2": ("Table 2", 9), "dong2025_table6": ("Table 6", 19),
           "dong2025_table7": ("Table 7", 19), "dong2025_table8": ("Table 8", 20), "dong2025_table9": ("Table 9", 20),
           "dong2025_fig4a": ("Figure 4a", 8), "dong2025_fig4b": ("Figure 4b", 8), "dong2025_fig4c": ("Figure 4c", 8),
           "dong2025_fig3": ("Figure 3", 6)}


def test_every_table_is_shipped_and_loads_with_its_citation():
    assert papers.names() == sorted(COLUMNS)
    for name, columns in COLUMNS.items():
        df = papers.table(name)
        assert list(df.columns) == columns and len(df) > 0, name
        assert not df.isna().any().any(), name
        source, page = SOURCES[name]
        assert df.attrs["source"] == source and df.attrs["page"] == page, name
        assert df.attrs["arxiv"] == "2506.09048" and "Dong" in df.attrs["paper"], name
        assert f"arXiv:2506.09048, {source}, p. {page}" in df.attrs["citation"], name
        assert df.attrs["approximate"] == name.startswith("dong2025_fig"), name
        assert ("approximate" in df.attrs["citation"]) == df.attrs["approximate"], name


def test_partial_tables_say_so():
    for name in papers.names():
        df = papers.table(name)
        assert df.attrs["complete"] == (name not in ("dong2025_fig4a", "dong2025_fig4b")), name
        if not df.attrs["complete"]:
            assert "Partial" in df.attrs["note"], name


def test_bijection_tables_have_every_model_and_task_in_range():
    for name, n in (("dong2025_table8", 10), ("dong2025_table9", 20)):
        df = papers.table(name)
        assert len(df) == len(MODELS) * len(BIJECTIONS) and (df["n"] == n).all()
        grid = df.pivot(index="task", columns="model", values="tv")
        assert sorted(grid.index) == sorted(BIJECTIONS) and sorted(grid.columns) == sorted(MODELS)
        assert df[["icl", "tv"]].stack().between(0, 1).all()
    t8 = papers.table("dong2025_table8").set_index(["model", "task"])
    assert tuple(t8.loc[("GPT-J", "lower_upper"), ["icl", "tv"]]) == (1.00, 0.08)


def test_table1_matches_the_llama7b_column_of_table8():
    t1 = papers.table("dong2025_table1")
    assert set(t1["direction"]) == {"X->Y", "Y->X", "X<->Y"} and t1[["icl", "tv"]].stack().between(0, 1).all()
    assert len(t1) == 8 * 3 + 1 + 2  # eight tasks in three directions, copy in one, antonym in two
    bij = t1[t1["direction"] == "X<->Y"].set_index("task")[["icl", "tv"]]
    t8 = papers.table("dong2025_table8")
    llama = t8[t8["model"] == "Llama-7B"].set_index("task")[["icl", "tv"]]
    pd.testing.assert_frame_equal(bij.drop(index="copy").sort_index(), llama.sort_index())


@pytest.mark.parametrize("name, model, methods", [
    ("dong2025_table2", "Llama-13B", ["Baseline", "TaskV", "TaskV-M"]),
    ("dong2025_table6", "Pythia-12B", ["Baseline", "TaskV", "TaskV-M"]),
    ("dong2025_table7", "Llama-13B", ["Baseline", "TaskV", "TaskV-M", "TaskV-MS"]),
])
def test_multi_vector_tables_have_every_cell_in_range(name, model, methods):
    df = papers.table(name)
    assert (df["model"] == model).all() and sorted(df["method"].unique()) == sorted(methods)
    assert df["mean"].between(0, 100).all() and df["std"].between(0, 10).all()
    for (n, method), group in df.groupby(["n_shots", "method"]):
        assert list(group["category"]) == CATEGORIES, (n, method)
        assert method in ("Baseline", "TaskV") or n >= 1  # no multi-vector rows at N = 0
    assert sorted(df["n_shots"].unique()) == [0, 1, 2, 3, 4]
    assert len(df) == len(CATEGORIES) * (2 + 4 * len(methods))  # N = 0: Baseline and TaskV only


def test_table7_repeats_table2_and_adds_taskv_ms():
    t2, t7 = papers.table("dong2025_table2"), papers.table("dong2025_table7")
    shared = t7[t7["method"] != "TaskV-MS"].reset_index(drop=True)
    pd.testing.assert_frame_equal(shared, t2)
    ms = t7[t7["method"] == "TaskV-MS"].set_index(["n_shots", "category"])["mean"]
    assert ms[(4, "Bijection")] == 72.09 and ms[(1, "Average")] == 78.96


def test_figure4_values_are_positive_risks():
    for name in ("dong2025_fig4a", "dong2025_fig4b", "dong2025_fig4c"):
        df = papers.table(name)
        assert (df["risk"] > 0).all() and (df["risk"] < 10).all(), name
    c = papers.table("dong2025_fig4c").set_index(["series", "L"])["risk"]
    assert c[("Task Vector", 2)] > c[("ICL (n=1)", 2)] and c[("Task Vector", 3)] > c[("ICL (n=1)", 3)]


def test_unknown_table_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown table 'table3'; valid tables: dong2025_fig3, dong2025_fig4a, .*dong2025_table9"):
        papers.table("table3")


def test_header_without_citation_keys_is_rejected():
    with pytest.raises(ValueError, match="header lacks arxiv, source, page"):
        papers.read_header(["# paper: X", "# approximate: no", "# complete: yes", "# units: u", "# note: n", "a,b"])
    full = ["# paper: X", "# arxiv: 1", "# source: T", "# page: 2", "# complete: yes", "# units: u", "# note: n"]
    with pytest.raises(ValueError, match="'approximate' must be yes or no, got 'maybe'"):
        papers.read_header(full + ["# approximate: maybe"])
