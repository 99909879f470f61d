"""parse_size_to_int, split_state_dict_into_shards_factory (Python callables),
split_torch_state_dict_into_shards and the storage helpers against every vector of
tests/data/{parse_size_cases,split_cases}.json, through the Python API with real tensors.

Deliberate differences from the reference are asserted as quicksave's behaviour, by name:
  - pattern_without_suffix: refused with ValueError (the reference names every shard alike and
    loses all but the last);
  - pattern_with_other_field_error: ValueError naming the field (the reference: KeyError('other'));
  - parse_size "infKB" / "nanKB": ValueError starting with Python's message (the reference:
    OverflowError / a bare ValueError) - every bad size is one exception type.
"""

import pytest

import quicksave
from conftest import golden_state_dict

DELIBERATE_SPLIT = {"pattern_without_suffix", "pattern_with_other_field_error"}


def expected_split(output):
    return (
        output["is_sharded"],
        output["metadata"],
        {file: names for file, names in output["filename_to_tensors"]},
        list(map(tuple, output["tensor_to_filename"])),
    )


def actual_split(split):
    return split.is_sharded, split.metadata, split.filename_to_tensors, list(split.tensor_to_filename.items())


def test_parse_size_cases(parse_size_golden):
    cases = parse_size_golden["cases"]
    assert len(cases) >= 25
    for case in cases:
        raised = case["raised"]
        if raised is None:
            assert quicksave.parse_size_to_int(case["input"]) == case["output"], case["input"]
            continue
        with pytest.raises(ValueError) as info:
            quicksave.parse_size_to_int(case["input"])
        assert isinstance(info.value, quicksave.InvalidArgumentError)
        assert info.value.code == "invalid_argument"
        if raised["type"] == "ValueError" and not raised["message"].startswith("cannot convert"):
            assert str(info.value) == raised["message"], case["input"]
        else:  # deliberate: OverflowError / bare NaN message, as a ValueError with the input appended
            assert str(info.value).startswith(raised["message"]), (case["input"], str(info.value))


def test_parse_size_default_constant(parse_size_golden):
    assert quicksave.MAX_SHARD_SIZE == parse_size_golden["constants"]["MAX_SHARD_SIZE"]
    for unit, multiplier in parse_size_golden["constants"]["SIZE_UNITS"].items():
        assert quicksave.parse_size_to_int("1" + unit) == multiplier


def factory_input(case):
    return {name: value for name, value in case["input"]}


def test_factory_cases_with_python_callables(split_golden):
    cases = split_golden["factory_cases"]
    assert len(cases) == 7
    for case in cases:
        kwargs = {}
        if case["get_storage_id"] == "list[0]":
            kwargs["get_storage_id"] = lambda value: value[0]
        sized = []

        def get_storage_size(value):
            sized.append(value)
            return sum(value)

        split = quicksave.split_state_dict_into_shards_factory(
            factory_input(case),
            get_storage_size=get_storage_size,
            filename_pattern=case["filename_pattern"],
            max_shard_size=case["max_shard_size"],
            **kwargs,
        )
        assert case["raised"] is None
        assert actual_split(split) == expected_split(case["output"]), case["id"]
        assert all(not isinstance(v, str) for v in sized), "string values are never sized"


def test_factory_sizes_only_the_first_tensor_of_a_storage():
    seen = []
    quicksave.split_state_dict_into_shards_factory(
        {"a": [1, 5], "b": [1, 7], "c": [2, 3]},
        get_storage_size=lambda v: seen.append(v) or sum(v),
        get_storage_id=lambda v: v[0],
        filename_pattern="m{suffix}",
    )
    assert seen == [[1, 5], [2, 3]]


def test_factory_defaults_match_the_reference_signature():
    import inspect

    params = inspect.signature(quicksave.split_state_dict_into_shards_factory).parameters
    assert [p.kind for p in params.values()][1:] == [inspect.Parameter.KEYWORD_ONLY] * 4
    assert params["max_shard_size"].default == "5GB"
    assert params["get_storage_id"].default(object()) is None
    assert params["filename_pattern"].default is inspect.Parameter.empty


def test_storage_sizes_and_ids_match_the_reference(split_golden):
    for case in split_golden["torch_cases"]:
        sd = golden_state_dict(case["input"])
        id_of_label = {}
        for t in case["input"]:
            if t["kind"] != "tensor":
                continue
            tensor = sd[t["name"]]
            assert quicksave.get_torch_storage_size(tensor) == t["ref_get_torch_storage_size"], (case["id"], t["name"])
            storage_id = quicksave.get_torch_storage_id(tensor)
            assert (storage_id is None) == (t["ref_storage_id_label"] is None), (case["id"], t["name"])
            if storage_id is None:
                continue
            device, _, size = storage_id
            assert device == tensor.device and size == t["ref_get_torch_storage_size"]
            for label, other in id_of_label.items():
                assert (label == t["ref_storage_id_label"]) == (other == storage_id), (case["id"], t["name"], label)
            id_of_label[t["ref_storage_id_label"]] = storage_id


def split_kwargs(case):
    return {k: v for k, v in case["kwargs"].items() if k in ("filename_pattern", "max_shard_size")}


def test_split_torch_cases(split_golden):
    cases = split_golden["torch_cases"]
    assert len(cases) >= 31
    for case in cases:
        if case["id"] in DELIBERATE_SPLIT:
            continue
        sd = golden_state_dict(case["input"])
        if case["raised"] is not None:
            assert case["raised"]["type"] == "ValueError"
            with pytest.raises(ValueError) as info:
                quicksave.split_torch_state_dict_into_shards(sd, **split_kwargs(case))
            assert str(info.value) == case["raised"]["message"]
            continue
        split = quicksave.split_torch_state_dict_into_shards(sd, **split_kwargs(case))
        assert isinstance(split, quicksave.StateDictSplit)
        assert actual_split(split) == expected_split(case["output"]), case["id"]


def torch_case(split_golden, case_id):
    return next(c for c in split_golden["torch_cases"] if c["id"] == case_id)


def test_deliberate_pattern_without_suffix_is_refused(split_golden):
    case = torch_case(split_golden, "pattern_without_suffix")
    assert case["output"]["is_sharded"] is False  # the reference: one name for every shard
    with pytest.raises(ValueError, match=r"has no \{suffix\} field") as info:
        quicksave.split_torch_state_dict_into_shards(golden_state_dict(case["input"]), **split_kwargs(case))
    assert isinstance(info.value, quicksave.InvalidArgumentError)


def test_deliberate_pattern_with_other_field_is_a_value_error(split_golden):
    case = torch_case(split_golden, "pattern_with_other_field_error")
    assert case["raised"] == {"type": "KeyError", "message": "'other'"}
    with pytest.raises(ValueError, match="other") as info:
        quicksave.split_torch_state_dict_into_shards(golden_state_dict(case["input"]), **split_kwargs(case))
    assert info.value.code == "invalid_argument"


def test_state_dict_split_is_a_dataclass_like_the_reference():
    import dataclasses

    split = quicksave.StateDictSplit(metadata={"total_size": 1}, filename_to_tensors={"a": ["x"], "b": ["y"]},
                                     tensor_to_filename={"x": "a", "y": "b"})
    assert dataclasses.is_dataclass(split) and split.is_sharded
    assert [f.name for f in dataclasses.fields(split)] == ["is_sharded", "metadata", "filename_to_tensors", "tensor_to_filename"]
    with pytest.raises(TypeError):
        quicksave.StateDictSplit(metadata={}, filename_to_tensors={}, tensor_to_filename={}, is_sharded=True)


def test_max_shard_size_as_float_compares_like_python():
    sd = {"a": [3], "b": [3]}
    kwargs = dict(get_storage_size=sum, filename_pattern="m{suffix}")
    # sizes are ints: `6 > 5.5` splits, `6 > 6.0` does not
    assert quicksave.split_state_dict_into_shards_factory(sd, max_shard_size=5.5, **kwargs).is_sharded
    assert not quicksave.split_state_dict_into_shards_factory(sd, max_shard_size=6.0, **kwargs).is_sharded
