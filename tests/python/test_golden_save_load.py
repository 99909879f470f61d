"""save_torch_state_dict and load_torch_model against every save and load case of
tests/data/save_cases.json, through the Python API with real tensors, real files and real loads:
file listings, index bytes, safetensors headers and values, torch.save archives, results and
messages.

Deliberate differences from the reference are asserted one by one, by name (DELIBERATE): the
reference's results there are data loss, crashes or a broken strict load."""

import json
import os
from pathlib import Path

import pytest
import torch

import quicksave
from conftest import SAFETENSORS_CODES, golden_state_dict, read_safetensors_bytes, read_safetensors_header, tensor_bytes

DELIBERATE = {
    "bin_cleanup": "stale-file clean-up removes only exact shard/index names of the pattern",
    "bin_missing_directory": "the save directory is created",
    "st_lone_slice_error": "a lone partial view is saved with its own bytes",
    "st_disjoint_slices_error": "disjoint slices of one storage are each saved",
    "st_string_value_error": "a string value is refused with a clear ValueError",
    "st_complex64_keyerror": "complex64 is saved as C64",
    "st_force_contiguous_false": "refused with safetensors' own error (the golden run used a recording shim)",
}


def save_kwargs(case):
    return dict(case["kwargs"])


def create_pre_existing(directory: Path, names):
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name.endswith("/"):
            (directory / name[:-1]).mkdir(parents=True, exist_ok=True)
        else:
            (directory / name).write_text("stale")


def listing(directory: Path):
    """The Hugging Face files (quicksave adds its checksum manifest beside them)."""
    return sorted(name for name in os.listdir(directory) if not name.endswith(".quicksave-manifest.json"))


def expect_safetensors_file(path: Path, call, source):
    header = read_safetensors_header(path)
    metadata = header.pop("__metadata__", {})
    assert metadata == call["metadata"], path.name
    assert sorted(header) == sorted(t["name"] for t in call["tensors"]), path.name
    expected = {t["name"]: t for t in call["tensors"]}
    for name, data in read_safetensors_bytes(path).items():
        assert data == tensor_bytes(source[name]), name
        assert header[name]["shape"] == expected[name]["shape"], name
        assert header[name]["dtype"] == SAFETENSORS_CODES[expected[name]["dtype"]], name


def expect_bin_file(path: Path, expected, source):
    loaded = torch.load(path, weights_only=True)
    assert list(loaded) == expected["keys"], path.name
    storage_of_label = {}
    for name, label in expected["storages"]:
        tensor = loaded[name]
        assert tensor_bytes(tensor) == tensor_bytes(source[name]), name
        pointer = tensor.storage().data_ptr()
        if label in storage_of_label:
            assert storage_of_label[label] == pointer, f"{name} should share {label}"
        storage_of_label[label] = pointer


def save_case(save_golden, case_id):
    return next(c for c in save_golden["save_cases"] if c["id"] == case_id)


def test_save_cases_match_the_reference(save_golden, tmp_path):
    exact = 0
    for case in save_golden["save_cases"]:
        if case["id"] in DELIBERATE:
            continue
        directory = tmp_path / case["id"] / "save_directory"
        create_pre_existing(directory, case["pre_existing_files"])
        sd = golden_state_dict(case["input"])
        keys_before = list(sd)
        kwargs = save_kwargs(case)
        metadata_before = json.loads(json.dumps(kwargs.get("metadata")))
        quicksave.save_torch_state_dict(sd, directory, **kwargs)
        # quicksave never mutates its inputs (the reference deletes aliases and adds metadata)
        assert list(sd) == keys_before and kwargs.get("metadata") == metadata_before, case["id"]

        assert listing(directory) == sorted(f["name"] for f in case["files_after"]), case["id"]
        calls = {call["file"]: call for call in case["safetensors_save_file_calls"]}
        for f in case["files_after"]:
            path = directory / f["name"]
            if f["kind"] == "json":
                assert path.read_text(encoding="utf-8") == f["text"], (case["id"], f["name"])
            elif f["kind"] == "torch.save":
                expect_bin_file(path, f, sd)
            elif f["kind"].startswith("safetensors"):
                expect_safetensors_file(path, calls[f["name"]], sd)
        exact += 1
    assert exact == len(save_golden["save_cases"]) - len(DELIBERATE)


def test_deliberate_cleanup_removes_only_exact_pattern_names(save_golden, tmp_path):  # bin_cleanup
    case = save_case(save_golden, "bin_cleanup")
    directory = tmp_path / "d"
    create_pre_existing(directory, case["pre_existing_files"])
    quicksave.save_torch_state_dict(golden_state_dict(case["input"]), directory, **save_kwargs(case))
    expected = {f["name"] for f in case["files_after"]}
    # The reference also deletes these: its regex is a start-anchored prefix match, dots unescaped.
    expected |= {"pytorch_model.bin.bak", "pytorch_modelXbin", "pytorch_model.binary"}
    assert set(listing(directory)) == expected


def test_deliberate_missing_directory_is_created(save_golden, tmp_path):  # bin_missing_directory
    case = save_case(save_golden, "bin_missing_directory")
    assert case["raised"]["type"] == "FileNotFoundError"
    directory = tmp_path / "not" / "there"
    quicksave.save_torch_state_dict(golden_state_dict(case["input"]), directory, **save_kwargs(case))
    assert (directory / "pytorch_model.bin").is_file()


@pytest.mark.parametrize("case_id", ["st_lone_slice_error", "st_disjoint_slices_error", "st_complex64_keyerror"])
def test_deliberate_partial_views_and_complex_are_saved(save_golden, tmp_path, case_id):
    case = save_case(save_golden, case_id)
    assert case["raised"] is not None  # the reference refuses (RuntimeError) or crashes (KeyError)
    sd = golden_state_dict(case["input"])
    quicksave.save_torch_state_dict(sd, tmp_path / "d")
    back = quicksave.load_state_dict_from_file(tmp_path / "d" / "model.safetensors")
    assert sorted(back) == sorted(sd)
    for name, tensor in sd.items():
        assert tensor_bytes(back[name]) == tensor_bytes(tensor), name


def test_deliberate_string_value_is_refused_clearly(save_golden, tmp_path):  # st_string_value_error
    case = save_case(save_golden, "st_string_value_error")
    assert case["raised"]["type"] == "AttributeError"
    sd = golden_state_dict(case["input"])
    string_keys = [k for k, v in sd.items() if isinstance(v, str)]
    with pytest.raises(ValueError, match="is a str, not a torch.Tensor") as info:
        quicksave.save_torch_state_dict(sd, tmp_path / "d")
    assert repr(string_keys[0]) in str(info.value)
    assert not (tmp_path / "d").exists()


def test_deliberate_force_contiguous_false_refuses_non_contiguous(save_golden, tmp_path):
    case = save_case(save_golden, "st_force_contiguous_false")
    with pytest.raises(quicksave.Error, match="non contiguous tensor: `w_t`"):
        quicksave.save_torch_state_dict(golden_state_dict(case["input"]), tmp_path / "d", **save_kwargs(case))
    assert not (tmp_path / "d").exists()  # nothing written, nothing created


# ---- load_torch_model -----------------------------------------------------------------------


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        for i, value in enumerate([4.0, 10.0, 30.0, 2.0, 2.0]):
            self.register_parameter(f"layer_{i + 1}", torch.nn.Parameter(torch.tensor([value])))


def fixture_state_dict(keys):
    return {k: torch.tensor([(i + 1) * 10], dtype=torch.int64) for i, k in enumerate(keys)}


ALL_KEYS = ["layer_1", "layer_2", "layer_3", "layer_4", "layer_5"]


def build_load_case(case, directory: Path):
    """Writes the checkpoint a load case describes; returns (path to load, load_torch_model kwargs)."""
    case_id = case["id"]
    kwargs = {}
    path = directory
    if case_id.startswith("bin_sharded"):
        kwargs = {"safe": False, "strict": "strict_true" in case_id}
        keys = {
            "bin_sharded_missing_key_strict_true": ALL_KEYS[:4],
            "bin_sharded_missing_and_unexpected_strict_true": ALL_KEYS[:3] + ["zz", "extra_key"],
        }.get(case_id, ALL_KEYS + ["extra_key"])
        quicksave.save_torch_state_dict(fixture_state_dict(keys), directory, safe_serialization=False, max_shard_size=8)
    elif case_id.startswith("bin_single") or case_id == "bin_file_path_direct":
        kwargs = {"safe": case_id == "bin_single_safe_true_no_safetensors"}
        keys = ALL_KEYS + ["extra_key"] if case_id == "bin_single_strict_false" else ALL_KEYS
        quicksave.save_torch_state_dict(fixture_state_dict(keys), directory, safe_serialization=False, max_shard_size="1GB")
        if case_id == "bin_file_path_direct":
            path = directory / "pytorch_model.bin"
    elif case_id == "path_does_not_exist":
        path = Path("/nonexistent/hfgold_path")
    elif case_id.startswith("index_validation"):
        directory.mkdir(parents=True)
        message = case["raised"]["message"]
        shard = message[len("Invalid shard filename '") : message.index("' in index file")]
        index = {"metadata": {"total_size": 8}, "weight_map": {"layer_1": shard}}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    else:
        raise AssertionError(f"unknown load case {case_id}")
    return path, kwargs


def test_load_cases(save_golden, tmp_path):
    cases = save_golden["load_cases"]
    assert len(cases) == 13
    for case in cases:
        directory = tmp_path / case["id"] / "ckpt"
        path, kwargs = build_load_case(case, directory)
        net = Net()
        if case["raised"] is None:
            result = quicksave.load_torch_model(net, path, **kwargs)
            assert list(result.missing_keys) == case["result"]["missing_keys"], case["id"]
            assert list(result.unexpected_keys) == case["result"]["unexpected_keys"], case["id"]
            assert net.layer_1.item() == 10.0  # int64 10 copied into the float parameter
            continue
        expected_type = {"ValueError": ValueError, "RuntimeError": RuntimeError}[case["raised"]["type"]]
        with pytest.raises(expected_type) as info:
            quicksave.load_torch_model(net, path, **kwargs)
        assert str(info.value) == case["raised"]["message"].replace("<dir>", str(directory)), case["id"]
        if expected_type is ValueError:
            assert isinstance(info.value, quicksave.InvalidArgumentError)


def test_load_result_is_torchs_incompatible_keys(tmp_path):
    quicksave.save_torch_state_dict(fixture_state_dict(ALL_KEYS), tmp_path / "c", max_shard_size=8)
    result = quicksave.load_torch_model(Net(), tmp_path / "c")
    assert isinstance(result, torch.nn.modules.module._IncompatibleKeys)
    assert repr(result) == "<All keys matched successfully>"


def test_deliberate_strict_load_of_a_sharded_checkpoint_with_matching_keys(tmp_path):
    # The reference loads each shard strictly and so always fails here (bin_sharded_strict_true_exact_keys).
    for safe in (True, False):
        directory = tmp_path / f"safe_{safe}"
        quicksave.save_torch_state_dict(fixture_state_dict(ALL_KEYS), directory, max_shard_size=8, safe_serialization=safe)
        assert len([n for n in os.listdir(directory) if not n.endswith(".json")]) == 5
        net = Net()
        result = quicksave.load_torch_model(net, directory, strict=True, safe=safe)
        assert repr(result) == "<All keys matched successfully>"
        assert [p.item() for p in net.parameters()] == [10.0, 20.0, 30.0, 40.0, 50.0]


def test_load_state_dict_from_file_messages(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError) as info:
        quicksave.load_state_dict_from_file(missing)
    assert str(info.value) == (
        f"No checkpoint file found at '{missing}'. Please verify the path is correct and the file has been properly downloaded."
    )
    assert isinstance(info.value, quicksave.NotFoundError) and info.value.code == "not_found"
    quicksave.save_torch_state_dict({"w": torch.ones(2)}, tmp_path / "c", metadata={"format": "custom"})
    path = tmp_path / "c" / "model.safetensors"
    with pytest.raises(OSError) as info:
        quicksave.load_state_dict_from_file(path)
    assert str(info.value) == (
        f"The safetensors archive passed at {path} does not contain the valid metadata. Make sure you save your model "
        "with the `save_torch_model` method."
    )
    assert isinstance(info.value, quicksave.CorruptError)


def test_load_state_dict_from_file_map_location_and_mmap(tmp_path):
    sd = {"b": torch.arange(6, dtype=torch.float16).reshape(2, 3), "a": torch.tensor([1, 2], dtype=torch.int32)}
    quicksave.save_torch_state_dict(sd, tmp_path)
    for kwargs in ({}, {"mmap": True}, {"map_location": "cpu"}, {"map_location": torch.device("cpu")}, {"map_location": "meta"}):
        loaded = quicksave.load_state_dict_from_file(tmp_path / "model.safetensors", **kwargs)
        assert list(loaded) == ["a", "b"]  # safetensors' key order
        for name in sd:
            assert torch.equal(loaded[name], sd[name]) and loaded[name].device.type == "cpu"
    mapped = quicksave.load_state_dict_from_file(tmp_path / "model.safetensors", mmap=True)
    mapped["a"].add_(100)  # a private mapping: the file is unchanged
    assert torch.equal(quicksave.load_state_dict_from_file(tmp_path / "model.safetensors")["a"], sd["a"])
