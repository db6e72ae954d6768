"""Word tasks: data integrity, bijections, the first-token rule, seeded prompt sampling."""

import numpy as np
import pytest

from tvlib.llm import load
from tvlib.llm import wordtasks as wt


class CharTokenizer:
    """A stand-in tokenizer: one token per character, except that '->' is one token."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids, i = [], 0
        while i < len(text):
            if text.startswith("->", i):
                ids.append(1000)
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return {"input_ids": ids}


def test_every_task_is_a_function_with_enough_pairs():
    for name in wt.task_names():
        task = wt.load_task(name)
        inputs = [x for x, _ in task.pairs]
        assert len(inputs) == len(set(inputs)), name
        assert len(task.pairs) >= (25 if "letter" in name else 26 if "upper" in name or "lower" in name else 40), name


def test_list_tasks_answer_the_first_and_last_letter():
    lists = wt.letter_lists()
    assert len(lists) == len(set(lists)) == 60 and lists == wt.letter_lists()
    assert all(len(x.split()) == 3 == len(set(x.split())) for x in lists)
    first, last = dict(wt.load_task("list_first").pairs), dict(wt.load_task("list_last").pairs)
    assert all(first[x] == x.split()[0] and last[x] == x.split()[-1] for x in lists)


def test_word_lists_are_ours_and_well_formed():
    assert wt.word_lists() == ["antonym", "country_capital", "english_french", "english_spanish", "present_gerund",
                               "present_past", "singular_plural"]
    for name in wt.word_lists():
        pairs = wt.load_pairs(name)
        assert all(x.strip() == x and y.strip() == y and x and y for x, y in pairs), name


def test_bijection_unites_map_and_inverse_and_drops_conflicts():
    pairs = (("light", "dark"), ("heavy", "light"), ("a", "b"))
    bij = dict(wt.bijection(pairs))
    assert bij == {"heavy": "light", "a": "b", "dark": "light", "b": "a"}  # 'light' had two outputs
    task = wt.load_task("bij_lower_upper")
    assert task.kind == "bijection" and dict(task.pairs)["a"] == "A" and dict(task.pairs)["A"] == "a"


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'nope'.*lower_upper"):
        wt.load_task("nope")
    with pytest.raises(FileNotFoundError, match="antonym"):
        wt.load_pairs("nope")


def test_template_formats_demos_and_query():
    t = wt.Template()
    assert t.prompt((("a", "A"), ("b", "B")), "c") == "example:a->A\nexample:b->B\nexample:c->"
    assert wt.Template(prefix="Q:", arrow=" =", separator="; ").prompt((("a", "A"),), "c") == "Q:a =A; Q:c ="


def test_first_token_filter_keeps_answers_with_a_unique_first_token():
    task = wt.WordTask("caps", (("France", "Paris"), ("Czechia", "Prague"), ("Peru", "Lima"), ("Spain", "Madrid")))
    kept = wt.first_token_filter(task, CharTokenizer())
    assert kept.pairs == (("Peru", "Lima"), ("Spain", "Madrid"))  # Paris and Prague share 'P'
    assert wt.answer_first_token(CharTokenizer(), wt.Template(), "Lima") == ord("L")
    assert wt.answer_first_token(CharTokenizer(), wt.Template(), "") is None


def test_survival_table_counts_kept_pairs():
    table = wt.survival_table(CharTokenizer(), ["lower_upper", "next_letter"])
    assert table.loc["lower_upper", "kept"] == 26 and table.loc["next_letter", "pairs"] == 25


def test_prompts_are_seeded_disjoint_and_exclude_the_query():
    task = wt.load_task("antonym")
    dev, test = wt.dev_test_prompts(task, n_dev=10, n_test=10, n_shots=5, n_dummies=2, seed=3)
    again, _ = wt.dev_test_prompts(task, n_dev=10, n_test=10, n_shots=5, n_dummies=2, seed=3)
    other, _ = wt.dev_test_prompts(task, n_dev=10, n_test=10, n_shots=5, n_dummies=2, seed=4)
    assert dev == again and dev != other
    assert not {p.query for p in dev} & {p.query for p in test}
    for p in dev + test:
        used = [x for x, _ in p.demos] + list(p.dummies)
        assert len(p.demos) == 5 and len(p.dummies) == 2 and len(set(used)) == 7
        assert p.query[0] not in used


def test_bijection_prompts_never_show_the_querys_inverse_pair():
    task = wt.load_task("bij_lower_upper")
    dev, test = wt.dev_test_prompts(task, n_dev=40, n_test=40, n_shots=20, n_dummies=2, seed=0)
    for p in dev + test:
        assert (p.query[1], p.query[0]) not in p.demos and p.query[1] not in p.dummies
        assert p.query[0] not in [x for x, _ in p.demos]
    # one-way tasks keep their old draw: the query's answer may be another pair's input there
    one_way = wt.load_task("next_letter")
    prompts = wt.sample_prompts(one_way, one_way.pairs, n_shots=20, n_dummies=2, rng=np.random.default_rng(0))
    assert any(p.query[1] in [x for x, _ in p.demos] for p in prompts)


def test_too_few_pairs_is_a_clear_error():
    task = wt.WordTask("tiny", (("a", "b"), ("c", "d")))
    with pytest.raises(ValueError, match="'tiny' has 2 pairs"):
        wt.sample_prompts(task, task.pairs, n_shots=5, n_dummies=2, rng=np.random.default_rng(0))


@pytest.mark.parametrize("name", ["present_gerund", "english_spanish"])
def test_new_lists_are_one_to_one_so_the_bijection_keeps_every_pair(name):
    pairs = wt.load_pairs(name)
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    assert len(set(xs)) == len(xs) and len(set(ys)) == len(ys)  # no duplicate x or y
    assert not set(xs) & set(ys)  # no word on both sides
    assert len(pairs) >= 60
    assert len(wt.load_task(f"bij_{name}").pairs) == 2 * len(pairs)
    assert wt.load_task(wt.directions(name)["Y->X"]).pairs == wt.inverse(pairs)


def test_directions_name_each_maps_inverse_and_bijection():
    assert wt.directions("present_gerund") == {"X->Y": "present_gerund", "Y->X": "gerund_present",
                                               "X<->Y": "bij_present_gerund"}
    assert wt.directions("antonym") == {"X->Y": "antonym", "X<->Y": "bij_antonym"}
    for name in list(wt.BIJECTION_OF.values()) + list(wt.INVERSE_OF.values()):
        assert set(wt.directions(name).values()) <= set(wt.task_names()), name
    with pytest.raises(ValueError, match="'copy' is not a one-way map.*valid: antonym, english_french"):
        wt.directions("copy")


RANK_LIMIT_TASKS = ["present_gerund", "gerund_present", "bij_present_gerund",
                    "english_spanish", "spanish_english", "bij_english_spanish"]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """SmolLM2-135M's tokenizer, from the converted model that load_llm reads (converted on first use)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(load.cached_model_dir("smollm2-135m"))


def test_new_lists_survive_the_first_token_rule_with_smollm2(smollm2_tokenizer):
    table = wt.survival_table(smollm2_tokenizer, RANK_LIMIT_TASKS)
    for name in RANK_LIMIT_TASKS:
        kept = wt.first_token_filter(wt.load_task(name), smollm2_tokenizer)
        assert table.loc[name, "kept"] == len(kept.pairs) >= 40, name
    assert table.loc["bij_english_spanish", "kind"] == "bijection"


def test_lower_upper_bijection_answers_are_the_other_case_and_keep_every_letter(smollm2_tokenizer):
    """SmolLM2's lower<->upper ICL of 0.00 on 8 prompts was the model echoing the query, not the answers:
    every letter survives the first-token rule, and the answer's first token is the other case's."""
    task = wt.first_token_filter(wt.load_task("bij_lower_upper"), smollm2_tokenizer)
    assert len(task.pairs) == 52
    first = {y: wt.answer_first_token(smollm2_tokenizer, wt.Template(), y) for _, y in task.pairs}
    for x, y in task.pairs:
        assert y == (x.upper() if x.islower() else x.lower()) and first[y] != first[x]
    _, test = wt.dev_test_prompts(task, n_dev=4, n_test=8, n_shots=10, n_dummies=2, seed=0)
    assert all(p.query[1] == p.query[0].swapcase() for p in test)
