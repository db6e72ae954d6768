"""The run cache shared by the linear and from-scratch trainers."""

import torch

from tvlib import runcache
from tvlib.linear import data, model


def test_save_atomic_leaves_only_the_final_file(tmp_path):
    path = tmp_path / "sub" / "run.pt"
    runcache.save_atomic({"x": torch.arange(3)}, path)
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))


def test_content_key_follows_configs_and_sources():
    key = runcache.content_key({"a": 1}, (data,))
    assert key == runcache.content_key({"a": 1}, (data,)) and len(key) == 16
    assert key != runcache.content_key({"a": 2}, (data,))
    assert key != runcache.content_key({"a": 1}, (data, model))


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TVLIB_CACHE", str(tmp_path))
    assert runcache.cache_dir() == tmp_path
