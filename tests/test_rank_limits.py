"""book/rank_limits.md reuses the linear models of book/emergence_linear.md through the run cache."""

from pathlib import Path

import pytest
import yaml

PARAMS = Path(__file__).resolve().parents[1] / "params"
LINEAR_KEYS = {"linear_run": ["steps", "batch", "n_seeds", "halve_every", "l1_from", "eval_every", "eval_batch",
                              "last_k"], "linear_n_values": "n_values", "linear_n_fig": "n_fig",
               "linear_tv_batch": "tv_batch"}


@pytest.mark.parametrize("profile", ["quick", "cpu", "full"])
def test_linear_settings_equal_emergence_linear_so_the_run_cache_is_shared(profile):
    chapters = yaml.safe_load((PARAMS / f"{profile}.yaml").read_text())["chapters"]
    rank, linear = chapters["rank_limits"], chapters["emergence_linear"]
    for key, theirs in LINEAR_KEYS.items():
        if isinstance(theirs, list):
            assert rank[key] == {k: linear[k] for k in theirs}, (profile, key)
        else:
            assert rank[key] == linear[theirs], (profile, key)
