"""Loads through quicksave's load engine from Python: straight into a model's own memory, every dtype,
tied weights, key subsets, verify catching a flipped byte, truncated files, and quicksave.Loader's
asynchronous loads. Each result is compared with what was saved, never only with "no error"."""
import os
from pathlib import Path

import pytest
import torch

import quicksave
from quicksave import serialization


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.block = torch.nn.Linear(16, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.head = torch.nn.Linear(32, 50, bias=False)
        self.register_buffer("steps", torch.tensor(7, dtype=torch.int64))


def fresh_copy(model: torch.nn.Module) -> torch.nn.Module:
    other = type(model)()
    with torch.no_grad():
        for p in other.parameters():
            p.fill_(0)
    return other


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("shard_size", ["1KB", "5GB"])
def test_load_torch_model_reads_straight_into_the_parameters(tmp_path, shard_size):
    torch.manual_seed(0)
    source = Net()
    serialization.save_torch_model(source, tmp_path, max_shard_size=shard_size)
    target = fresh_copy(source)
    pointers = {name: t.data_ptr() for name, t in target.state_dict().items()}
    result = serialization.load_torch_model(target, tmp_path, strict=True, verify=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert_same_state(source, target)
    # The same memory as before: nothing was swapped in, every byte was read into the parameters.
    assert {name: t.data_ptr() for name, t in target.state_dict().items()} == pointers


def test_every_dtype_and_tied_weights_load_as_saved(tmp_path):
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.int16,
              torch.int32, torch.int64, torch.bool, torch.complex64]
    dtypes += [d for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)) if d is not None]
    state = {}
    for i, dtype in enumerate(dtypes):
        raw = torch.arange(24, dtype=torch.int64).reshape(4, 6) * (i + 3)
        state[f"t{i}"] = raw.to(dtype) if dtype not in (torch.bool,) else raw % 2 == 0
    shared = torch.randn(5, 5)
    state["tied.a"] = shared
    state["tied.b"] = shared
    serialization.save_torch_state_dict(state, tmp_path, max_shard_size=200)
    loaded = quicksave.Loader().load(tmp_path)
    assert "tied.a" in loaded and "tied.b" not in loaded  # the reference keeps one name of a shared storage
    for name, value in loaded.items():
        assert value.dtype == state[name].dtype and torch.equal(value, state[name]), name
    for name, value in serialization.load_state_dict_from_file(next(tmp_path.glob("*.safetensors"))).items():
        assert torch.equal(value, state[name]), name


def test_keys_read_only_what_is_asked_and_fill_given_tensors_in_place(tmp_path):
    state = {"a": torch.randn(100), "b": torch.randn(7, 3), "c": torch.arange(10)}
    serialization.save_torch_state_dict(state, tmp_path)
    into = {"b": torch.zeros(7, 3), "c": torch.zeros(10, dtype=torch.float32)}  # c: another dtype, not filled in place
    future = quicksave.Loader().load_async(tmp_path, into, keys=["b", "c"])
    loaded = future.result(timeout=60)
    assert future.done()
    assert set(loaded) == {"b", "c"}
    assert loaded["b"].data_ptr() == into["b"].data_ptr() and torch.equal(into["b"], state["b"])
    assert loaded["c"].data_ptr() != into["c"].data_ptr() and torch.equal(loaded["c"], state["c"])
    read, total, _ = future.progress()
    assert read == total == 7 * 3 * 4 + 10 * 8
    with pytest.raises(quicksave.NotFoundError):
        quicksave.Loader().load_async(tmp_path, keys=["missing"])


def test_keys_open_only_the_shards_that_hold_them(tmp_path):
    state = {f"layer{i}": torch.full((256,), float(i)) for i in range(4)}
    serialization.save_torch_state_dict(state, tmp_path, max_shard_size="1KB")  # one tensor per shard
    shards = sorted(tmp_path.glob("*.safetensors"))
    assert len(shards) == 4
    holder = {name: shard for shard in shards for name in serialization.load_state_dict_from_file(shard)}
    holder["layer3"].unlink()  # this rank does not need it
    loaded = quicksave.Loader().load(tmp_path, keys=["layer1"])
    assert list(loaded) == ["layer1"] and torch.equal(loaded["layer1"], state["layer1"])
    with pytest.raises(quicksave.NotFoundError):
        quicksave.Loader().load(tmp_path)  # the whole checkpoint needs the missing shard


def test_a_flipped_byte_fails_a_verified_load_naming_the_tensor(tmp_path):
    torch.manual_seed(1)
    source = Net()
    serialization.save_torch_model(source, tmp_path)
    shard = tmp_path / "model.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(quicksave.CorruptError, match=r"tensor \S+ bytes \[\d+, \d+\) do not match the manifest"):
        serialization.load_torch_model(fresh_copy(source), tmp_path, verify=True)
    # Unverified, the flip goes unnoticed: verify is what finds it.
    serialization.load_torch_model(fresh_copy(source), tmp_path)


def test_a_truncated_shard_is_a_clear_error(tmp_path):
    serialization.save_torch_state_dict({"w": torch.randn(1000), "v": torch.randn(1000)}, tmp_path, max_shard_size="4KB")
    shard = sorted(tmp_path.glob("*.safetensors"))[-1]
    os.truncate(shard, shard.stat().st_size - 100)
    with pytest.raises(quicksave.CorruptError, match=shard.name):
        quicksave.Loader().load(tmp_path)
    with pytest.raises(quicksave.CorruptError):
        serialization.load_state_dict_from_file(shard)


def test_strict_and_mismatches_keep_the_reference_messages(tmp_path):
    source = Net()
    serialization.save_torch_model(source, tmp_path)

    class Other(Net):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(32, 49, bias=False)  # another shape
            self.extra = torch.nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match="size mismatch for head.weight"):
        serialization.load_torch_model(Other(), tmp_path)
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "extra.weight", "extra.bias"'):
        serialization.load_torch_model(Other(), tmp_path, strict=True)


def test_a_model_with_its_own_load_hook_is_loaded_through_it(tmp_path):
    source = Net()
    serialization.save_torch_model(source, tmp_path)
    calls = []

    class Hooked(Net):
        def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
            calls.append(prefix)
            super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    target = Hooked()
    serialization.load_torch_model(target, tmp_path, strict=True)
    assert calls == [""]
    assert_same_state(source, target)
