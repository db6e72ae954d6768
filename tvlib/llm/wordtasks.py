"""Word tasks for pretrained LLMs, in the prompt format of Hendel et al. (2023) and Dong et al. (2025).

A task is a function from input words to output words, given as (x, y) pairs. Letter tasks are
generated in code; word lists live in ``tvlib/llm/data/*.json`` and were written by hand for this
book. A bijection task (Dong et al., Sec. 4) is the union of a map and its inverse, kept only
where that union is still a function. :data:`INVERSE_OF` and :data:`BIJECTION_OF` name the tasks
derived from a map; :func:`directions` gives a map's X->Y, Y->X and X<->Y tasks (Table 1's columns).

Prompts are lines ``example:{x}->{y}`` joined by newlines, ending in the query ``example:{x}->``
(:class:`Template`). Evaluation scores the first generated token, so :func:`first_token_filter`
keeps only pairs whose answer is decided by its first token (the rule is in its docstring).
"""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from dataclasses import dataclass, replace
from importlib import resources

import numpy as np

Pair = tuple[str, str]


@dataclass(frozen=True)
class Template:
    """How demonstrations and the query are written; the defaults are the papers' format."""

    prefix: str = "example:"
    arrow: str = "->"
    separator: str = "\n"

    def line(self, x: str, y: str = "") -> str:
        """One demonstration ``example:x->y``, or the query ``example:x->`` when y is empty."""
        return f"{self.prefix}{x}{self.arrow}{y}"

    def prompt(self, demos: tuple[Pair, ...], query: str) -> str:
        """The demonstrations and the query, one per line (no demonstrations: a zero-shot prompt)."""
        return self.separator.join([self.line(x, y) for x, y in demos] + [self.line(query)])


@dataclass(frozen=True)
class WordTask:
    """A named function from inputs to outputs; ``kind`` is 'one-way' or 'bijection'."""

    name: str
    pairs: tuple[Pair, ...]
    kind: str = "one-way"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The distinct answers of the task, in order of first appearance."""
        return tuple(dict.fromkeys(y for _, y in self.pairs))


# ----------------------------------------------------------------------------- building tasks


def as_function(pairs: list[Pair]) -> tuple[Pair, ...]:
    """Deduplicate pairs and drop every input that maps to two different outputs."""
    unique = list(dict.fromkeys(pairs))
    fan_out = Counter(x for x, _ in unique)
    return tuple((x, y) for x, y in unique if fan_out[x] == 1)


def inverse(pairs: tuple[Pair, ...]) -> tuple[Pair, ...]:
    """The pairs read backwards (y -> x)."""
    return tuple((y, x) for x, y in pairs)


def bijection(pairs: tuple[Pair, ...]) -> tuple[Pair, ...]:
    """Dong et al.'s bijection task: a map united with its inverse, kept where that is a function."""
    return as_function(list(pairs) + list(inverse(pairs)))


def load_pairs(name: str) -> tuple[Pair, ...]:
    """The hand-written pairs of ``tvlib/llm/data/<name>.json``."""
    path = resources.files("tvlib.llm") / "data" / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no word list {name!r}; lists: {', '.join(word_lists())}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return tuple((x, y) for x, y in data["pairs"])


def word_lists() -> list[str]:
    """Names of the JSON word lists shipped in ``tvlib/data``."""
    return sorted(p.name[:-5] for p in (resources.files("tvlib.llm") / "data").iterdir() if p.name.endswith(".json"))


LOWER = string.ascii_lowercase
UPPER = string.ascii_uppercase


def letter_lists(n: int = 60, length: int = 3, seed: int = 0) -> list[str]:
    """``n`` distinct lists of ``length`` distinct lowercase letters, space-separated ("c f k"), drawn
    with a fixed seed: the inputs of Dong et al.'s list-first and list-last tasks (our lists)."""
    rng, lists = random.Random(seed), {}
    while len(lists) < n:
        lists.setdefault(" ".join(rng.sample(LOWER, length)), None)
    return list(lists)


def _one_way() -> dict[str, tuple[Pair, ...]]:
    """Every one-way task's pairs: the maps, then their inverses (:data:`INVERSE_OF`)."""
    maps = {
        "lower_upper": tuple(zip(LOWER, UPPER)),
        "copy": tuple((c, c) for c in LOWER + UPPER),
        "next_letter": tuple(zip(LOWER[:-1], LOWER[1:])),
        "prev_letter": tuple(zip(LOWER[1:], LOWER[:-1])),
        "list_first": tuple((x, x[0]) for x in letter_lists()),
        "list_last": tuple((x, x[-1]) for x in letter_lists()),
        **{name: load_pairs(name) for name in ("antonym", "country_capital", "english_french", "present_past",
                                               "singular_plural", "present_gerund", "english_spanish")},
    }
    return maps | {name: inverse(maps[of]) for name, of in INVERSE_OF.items()}


# Derived tasks, each named after the one-way map it is built from.
INVERSE_OF = {"upper_lower": "lower_upper", "french_english": "english_french", "past_present": "present_past",
              "plural_singular": "singular_plural", "gerund_present": "present_gerund",
              "spanish_english": "english_spanish"}
BIJECTION_OF = {"bij_lower_upper": "lower_upper", "bij_english_french": "english_french",
                "bij_present_past": "present_past", "bij_singular_plural": "singular_plural",
                "bij_antonym": "antonym", "bij_present_gerund": "present_gerund",
                "bij_english_spanish": "english_spanish"}
DIRECTIONS = ("X->Y", "Y->X", "X<->Y")  # Dong et al.'s Table 1 columns


def directions(name: str) -> dict[str, str]:
    """The tasks of the one-way map ``name`` (X -> Y), of its inverse and of its bijection, by direction.

    Only the directions that exist are returned: ``antonym`` has no separate inverse task.
    """
    inverse_task = {of: inv for inv, of in INVERSE_OF.items()}
    bijection_task = {of: bij for bij, of in BIJECTION_OF.items()}
    if name not in inverse_task and name not in bijection_task:
        valid = sorted(set(inverse_task) | set(bijection_task))
        raise ValueError(f"{name!r} is not a one-way map with an inverse or a bijection; valid: {', '.join(valid)}")
    found = zip(DIRECTIONS, (name, inverse_task.get(name), bijection_task.get(name)))
    return {direction: task for direction, task in found if task is not None}


def table1_columns(name: str) -> dict[str, str]:
    """Table 1's columns for one row: a map's :func:`directions`, or ``copy``, which the paper
    lists under X<->Y only (copy on a..z, A..Z maps the union onto itself)."""
    return {"X<->Y": "copy"} if name == "copy" else directions(name)


def task_names() -> list[str]:
    """All task names: the one-way tasks, then the bijections."""
    return list(_one_way()) + list(BIJECTION_OF)


def load_task(name: str) -> WordTask:
    """A task by name (see :func:`task_names`), as a function (conflicting inputs dropped)."""
    one_way = _one_way()
    if name in one_way:
        return WordTask(name, as_function(list(one_way[name])))
    if name in BIJECTION_OF:
        return WordTask(name, bijection(one_way[BIJECTION_OF[name]]), kind="bijection")
    raise ValueError(f"unknown task {name!r}; tasks: {', '.join(task_names())}")


# ----------------------------------------------------------------------------- tokenization


def answer_first_token(tokenizer, template: Template, y: str) -> int | None:
    """Token id of the first token of ``y`` as it follows the arrow, or None if it merges with it.

    The answer is tokenized in context (``arrow + y``); if those tokens do not start with the
    arrow's own tokens, the model cannot produce y right after a prompt ending in the arrow.
    """
    arrow = tokenizer(template.arrow, add_special_tokens=False)["input_ids"]
    both = tokenizer(template.arrow + y, add_special_tokens=False)["input_ids"]
    if both[:len(arrow)] != arrow or len(both) == len(arrow):
        return None
    return both[len(arrow)]


def first_token_filter(task: WordTask, tokenizer, template: Template = Template()) -> WordTask:
    """Keep the pairs whose answer is decided by its first token.

    Rule: a pair survives if its answer's first token after the arrow (:func:`answer_first_token`)
    exists and is not the first token of any *other* distinct answer of the task. Then the greedy
    first token identifies the answer among the task's answers, so first-token accuracy is exact.
    """
    first = {y: answer_first_token(tokenizer, template, y) for y in task.outputs}
    count = Counter(t for t in first.values() if t is not None)
    keep = tuple((x, y) for x, y in task.pairs if first[y] is not None and count[first[y]] == 1)
    return replace(task, pairs=keep)


def survival_table(tokenizer, names: list[str], template: Template = Template()):
    """Per task: pairs written, pairs kept by :func:`first_token_filter`, and the kept fraction."""
    import pandas as pd

    rows = []
    for name in names:
        task = load_task(name)
        kept = first_token_filter(task, tokenizer, template)
        rows.append({"task": name, "kind": task.kind, "pairs": len(task.pairs), "kept": len(kept.pairs),
                     "kept_frac": round(len(kept.pairs) / max(len(task.pairs), 1), 2)})
    return pd.DataFrame(rows).set_index("task")


# ----------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompt:
    """One test item: demonstrations, the query pair, and other queries for extracting task vectors.

    ``dummies`` are inputs that are neither the query nor a demonstration: the task vector is read
    from ``demos`` followed by each dummy query (Hendel et al.), never from the test query itself.
    """

    demos: tuple[Pair, ...]
    query: Pair
    dummies: tuple[str, ...]


def sample_prompts(task: WordTask, queries: tuple[Pair, ...], n_shots: int, n_dummies: int,
                   rng: np.random.Generator) -> list[Prompt]:
    """One prompt per query; demonstrations and dummy queries drawn from the other pairs, distinct.

    For a bijection the query's inverse pair (y_q -> x_q) is left out too: as a demonstration it
    would hand ICL the answer by a backward look-up. Dong et al.'s sampler excludes only the query
    (for letters the inverse pair shows up in about one prompt in five); we exclude both.
    """
    need = n_shots + n_dummies + 1 + (task.kind == "bijection")
    if len(task.pairs) < need:
        raise ValueError(f"task {task.name!r} has {len(task.pairs)} pairs; {n_shots} shots + "
                         f"{n_dummies} dummy queries + 1 query (+ its inverse pair, for a bijection) "
                         f"need at least {need}")
    prompts = []
    for query in queries:
        banned = {query[0], query[1]} if task.kind == "bijection" else {query[0]}
        others = [p for p in task.pairs if p[0] not in banned]
        pick = rng.choice(len(others), size=n_shots + n_dummies, replace=False)
        chosen = [others[i] for i in pick]
        prompts.append(Prompt(tuple(chosen[:n_shots]), query, tuple(x for x, _ in chosen[n_shots:])))
    return prompts


def dev_test_prompts(task: WordTask, n_dev: int, n_test: int, n_shots: int, n_dummies: int,
                     seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """Dev and test prompts whose queries come from disjoint halves of the task's pairs.

    Queries are drawn without replacement while a half lasts, then with replacement. Everything
    random comes from ``np.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(task.pairs))
    half = len(order) // 2
    halves = [[task.pairs[i] for i in order[:half]], [task.pairs[i] for i in order[half:]]]

    def draw(pool: list[Pair], n: int) -> tuple[Pair, ...]:
        idx = rng.choice(len(pool), size=n, replace=n > len(pool))
        return tuple(pool[i] for i in idx)

    dev_q, test_q = draw(halves[0], n_dev), draw(halves[1], n_test)
    return (sample_prompts(task, dev_q, n_shots, n_dummies, rng),
            sample_prompts(task, test_q, n_shots, n_dummies, rng))
