"""Loading checkpoints one did not write (issue #13): `.bin` files are read by quicksave's own
reader (no code runs) unless the caller opts in with allow_unsafe_pickle=True, and every index
entry must be found in its shard, strict or not."""

import json
import os
import pickle

import pytest
import torch

import quicksave
from quicksave import serialization


class RunsCode:
    """Unpickling this runs `touch <path>`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class Ab(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(2, 2)
        self.b = torch.nn.Linear(2, 2)


def test_bin_with_code_is_refused_by_default(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2), "x": RunsCode(marker)}, path)
    with pytest.raises(quicksave.CorruptError, match="refusing to call posix.system"):
        serialization.load_state_dict_from_file(path)
    with pytest.raises(quicksave.CorruptError, match="refusing"):
        serialization.load_state_dict_from_file(path, weights_only=False)
    (tmp_path / "m").mkdir()
    os.replace(path, tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(quicksave.CorruptError, match="refusing"):
        serialization.load_torch_model(Ab(), tmp_path / "m", safe=False)
    assert not marker.exists()


def test_unsafe_pickle_is_an_explicit_opt_in(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "pytorch_model.bin"
    torch.save({"x": RunsCode(marker)}, path)
    serialization.load_state_dict_from_file(path, weights_only=False, allow_unsafe_pickle=True)
    assert marker.exists()  # torch.load ran it: the caller asked for exactly that


def test_bin_is_read_without_torch_load(tmp_path, monkeypatch):
    model = Ab()
    (tmp_path / "m").mkdir()
    state_dict = model.state_dict()
    state_dict["view"] = state_dict["a.weight"][1:]  # a view sharing a storage
    torch.save(state_dict, tmp_path / "m" / "pytorch_model.bin")

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_torch_load)
    loaded = serialization.load_state_dict_from_file(tmp_path / "m" / "pytorch_model.bin")
    assert list(loaded) == list(state_dict)
    for name, tensor in state_dict.items():
        assert torch.equal(loaded[name], tensor), name
    del state_dict["view"]
    torch.save(state_dict, tmp_path / "m" / "pytorch_model.bin")
    target = Ab()
    keys = serialization.load_torch_model(target, tmp_path / "m", strict=True, safe=False)
    assert not keys.missing_keys and not keys.unexpected_keys
    assert torch.equal(target.b.weight, model.b.weight)


@pytest.mark.parametrize("strict", [True, False])
def test_index_entry_missing_from_its_shard_fails(tmp_path, strict):
    serialization.save_torch_model(Ab(), tmp_path, max_shard_size=20)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    weight_map = index["weight_map"]
    assert weight_map["b.weight"] != weight_map["a.bias"]
    weight_map["b.weight"] = weight_map["a.bias"]
    index_path.write_text(json.dumps(index, indent=2))
    target = Ab()
    before = target.b.weight.detach().clone()
    with pytest.raises(quicksave.CorruptError, match="the index maps b.weight to "):
        serialization.load_torch_model(target, tmp_path, strict=strict)
    assert torch.equal(target.b.weight, before)
