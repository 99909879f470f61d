"""A script written against huggingface_hub.serialization (hf_script.py) runs unchanged with the
import swapped to quicksave, and writes and loads the same things: once in this process with
quicksave, once in a subprocess with the real huggingface_hub (0.36.0 and safetensors 0.4.5 from
the project's .venv), whose report must equal quicksave's file for file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hf_script
import quicksave
from quicksave import serialization

HERE = Path(__file__).resolve().parent


def test_serialization_module_exports_the_reference_names():
    expected = {"StateDictSplit", "get_torch_storage_id", "get_torch_storage_size", "load_state_dict_from_file",
                "load_torch_model", "save_torch_model", "save_torch_state_dict", "split_state_dict_into_shards_factory",
                "split_torch_state_dict_into_shards"}
    assert expected <= set(serialization.__all__)
    for name in expected:
        assert getattr(serialization, name) is getattr(quicksave, name)


def test_signatures_match_the_reference():
    import inspect

    save = inspect.signature(serialization.save_torch_state_dict).parameters
    assert list(save) == ["state_dict", "save_directory", "filename_pattern", "force_contiguous", "max_shard_size",
                          "metadata", "safe_serialization", "is_main_process", "shared_tensors_to_discard"]
    assert {k: p.default for k, p in save.items()} == {
        "state_dict": inspect.Parameter.empty, "save_directory": inspect.Parameter.empty, "filename_pattern": None,
        "force_contiguous": True, "max_shard_size": "5GB", "metadata": None, "safe_serialization": True,
        "is_main_process": True, "shared_tensors_to_discard": None}
    assert list(inspect.signature(serialization.save_torch_model).parameters)[1:] == list(save)[1:]
    load = inspect.signature(serialization.load_torch_model).parameters
    reference_load = {
        "model": inspect.Parameter.empty, "checkpoint_path": inspect.Parameter.empty, "strict": False, "safe": True,
        "weights_only": False, "map_location": None, "mmap": False, "filename_pattern": None}
    assert {k: p.default for k, p in load.items() if k in reference_load} == reference_load
    # quicksave's own options come after the reference's, keyword-only, off by default (README).
    extras = [k for k in load if k not in reference_load]
    assert list(load)[: len(reference_load)] == list(reference_load)
    assert set(extras) <= {"verify", "allow_unsafe_pickle"}, extras
    assert all(load[k].kind == inspect.Parameter.KEYWORD_ONLY and load[k].default is False for k in extras)
    from_file = inspect.signature(serialization.load_state_dict_from_file).parameters
    reference_from_file = {
        "checkpoint_file": inspect.Parameter.empty, "map_location": None, "weights_only": False, "mmap": False}
    assert list(from_file)[: len(reference_from_file)] == list(reference_from_file)
    assert {k: p.default for k, p in from_file.items() if k in reference_from_file} == reference_from_file
    from_file_extras = [k for k in from_file if k not in reference_from_file]
    assert from_file_extras == ["allow_unsafe_pickle"], from_file_extras
    assert from_file["allow_unsafe_pickle"].kind == inspect.Parameter.KEYWORD_ONLY
    assert from_file["allow_unsafe_pickle"].default is False
    split = inspect.signature(serialization.split_torch_state_dict_into_shards).parameters
    assert {k: p.default for k, p in split.items()} == {
        "state_dict": inspect.Parameter.empty, "filename_pattern": "model{suffix}.safetensors", "max_shard_size": "5GB"}


def test_script_runs_with_quicksave(tmp_path):
    report = hf_script.run(serialization, str(tmp_path))
    assert report["loads"]["sharded"] == {"missing_keys": ["head.weight"], "unexpected_keys": []}  # the tied alias
    assert report["loads"]["pickles"] == {"missing_keys": [], "unexpected_keys": []}
    assert report["split"]["is_sharded"]
    assert sorted(report["files"]) == [
        "pickles/pytorch_model-00001-of-00003.bin", "pickles/pytorch_model-00002-of-00003.bin",
        "pickles/pytorch_model-00003-of-00003.bin", "pickles/pytorch_model.bin.index.json",
        "sharded/model-00001-of-00003.safetensors", "sharded/model-00002-of-00003.safetensors",
        "sharded/model-00003-of-00003.safetensors", "sharded/model.safetensors.index.json", "single/model.safetensors"]
    # the removed alias is recorded where the reference records it
    assert report["files"]["single/model.safetensors"]["metadata"] == {"format": "pt", "step": "3", "head.weight": "embed.weight"}


def reference_python():
    """The .venv interpreter when it has the real huggingface_hub and safetensors, else (None, why)."""
    python = os.environ.get("QUICKSAVE_VENV_PYTHON", str(HERE.parents[1] / ".venv" / "bin" / "python"))
    if not os.path.exists(python):
        return None, f"no reference virtual environment at {python} (scripts/setup.sh creates it)"
    probe = subprocess.run([python, "-c", "import huggingface_hub.serialization, safetensors.torch"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"huggingface_hub/safetensors not importable by {python}: {probe.stderr.strip().splitlines()[-1:]}"
    return python, ""


def test_script_runs_unchanged_with_the_real_huggingface_hub_and_agrees(tmp_path):
    python, why = reference_python()
    if python is None:
        pytest.skip(why)
    reference = subprocess.run([python, str(HERE / "hf_script.py"), "huggingface_hub", str(tmp_path / "hf")],
                               capture_output=True, text=True, check=True)
    expected = json.loads(reference.stdout)
    (tmp_path / "qs").mkdir()
    actual = json.loads(json.dumps(hf_script.run(serialization, str(tmp_path / "qs")), sort_keys=True))
    assert actual["loads"] == expected["loads"]
    assert actual["split"] == expected["split"]
    assert sorted(actual["files"]) == sorted(expected["files"])
    for name, description in expected["files"].items():
        assert actual["files"][name] == description, name  # byte-identical wherever the bytes are deterministic
    assert any("sha256" in d and name.endswith(".safetensors") for name, d in expected["files"].items())
