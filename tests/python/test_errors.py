"""quicksave's exceptions from Python: one class per ErrorCode, each a quicksave.Error and the
matching built-in (ValueError, FileNotFoundError, OSError, ...), with `code` (and `errno` for I/O),
raised with the reference's messages where the reference has one."""

import concurrent.futures
import os
import pickle

import pytest
import torch

import quicksave

HIERARCHY = {
    "InvalidArgumentError": ("invalid_argument", ValueError),
    "NotFoundError": ("not_found", FileNotFoundError),
    "AlreadyExistsError": ("already_exists", FileExistsError),
    "CorruptError": ("corrupt", OSError),
    "IoError": ("io", OSError),
    "ResourceExhaustedError": ("resource_exhausted", RuntimeError),
    "CancelledError": ("cancelled", concurrent.futures.CancelledError),
    "UnavailableError": ("unavailable", RuntimeError),
    "FailedPreconditionError": ("failed_precondition", RuntimeError),
    "InternalError": ("internal", RuntimeError),
}


def test_hierarchy():
    assert issubclass(quicksave.Error, Exception) and quicksave.Error.code is None
    for name, (code, builtin) in HIERARCHY.items():
        cls = getattr(quicksave, name)
        assert issubclass(cls, quicksave.Error) and issubclass(cls, builtin), name
        assert cls.code == code and cls.__module__ == "quicksave" and cls.__name__ == name


def test_errors_pickle_by_name():
    error = quicksave.InvalidArgumentError("bad")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is quicksave.InvalidArgumentError and str(again) == "bad"


def test_value_errors_where_the_reference_raises_them(tmp_path):
    with pytest.raises(ValueError, match=r"^Unit 'XB' not supported\. Supported units are TB, GB, MB, KB\. Got '5XB'\.$"):
        quicksave.save_torch_state_dict({"a": torch.ones(1)}, tmp_path, max_shard_size="5XB")
    with pytest.raises(ValueError, match=r"^Could not parse the size value from 'abcKB': could not convert string to float: 'abc'$"):
        quicksave.split_torch_state_dict_into_shards({"a": torch.ones(1)}, max_shard_size="abcKB")
    with pytest.raises(ValueError, match=r"^Checkpoint path .*missing does not exist$"):
        quicksave.load_torch_model(torch.nn.Linear(1, 1), tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="does not contain a valid checkpoint"):
        quicksave.load_torch_model(torch.nn.Linear(1, 1), empty)
    assert not list(tmp_path.glob("*.safetensors"))  # a bad size fails before any file is touched


def test_not_a_tensor_and_bad_keys(tmp_path):
    with pytest.raises(ValueError, match=r"^state_dict\['q'\] is a str, not a torch.Tensor"):
        quicksave.save_torch_state_dict({"q": "nf4"}, tmp_path)
    with pytest.raises(ValueError, match=r"^state_dict\['n'\] is a int, not a torch.Tensor"):
        quicksave.save_torch_state_dict({"n": 3}, tmp_path)
    with pytest.raises(ValueError, match="state dict keys must be str"):
        quicksave.save_torch_state_dict({1: torch.ones(1)}, tmp_path)
    with pytest.raises(ValueError, match="must be a mapping"):
        quicksave.save_torch_state_dict([torch.ones(1)], tmp_path)
    with pytest.raises(ValueError, match="max_shard_size must be a size string"):
        quicksave.save_torch_state_dict({"a": torch.ones(1)}, tmp_path, max_shard_size=[1])


def test_corrupt_file_is_a_corrupt_error(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(quicksave.CorruptError) as info:
        quicksave.load_state_dict_from_file(path)
    assert info.value.code == "corrupt" and str(path) in str(info.value)


def test_io_error_carries_errno(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(quicksave.IoError) as info:
        quicksave.save_torch_state_dict({"a": torch.ones(1)}, tmp_path / "file" / "sub")
    assert info.value.errno == 20 and isinstance(info.value, OSError)


def test_messages_with_undecodable_file_names(tmp_path):
    name = os.fsdecode(b"caf\xe9.safetensors")  # not UTF-8: surrogate-escaped
    path = tmp_path / name
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(quicksave.Error) as info:
        quicksave.load_state_dict_from_file(path)
    assert "caf" in str(info.value)


def test_strict_load_mismatch_is_a_runtime_error(tmp_path):
    quicksave.save_torch_state_dict({"weight": torch.ones(2, 2), "extra": torch.ones(1)}, tmp_path, max_shard_size=16)
    with pytest.raises(RuntimeError) as info:
        quicksave.load_torch_model(torch.nn.Linear(2, 2), tmp_path, strict=True)
    assert str(info.value) == 'Error(s) in loading state_dict for Linear\nMissing key(s): "bias".\nUnexpected key(s): "extra".'
