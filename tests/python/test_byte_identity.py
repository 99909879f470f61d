"""Files written from Python and from C++ for the same tensors are byte-identical.

The same golden state dicts (every save case of save_cases.json, and every split case of
split_cases.json that can be saved) are written three ways: by the C++ API in a separate program
(python_cpp_writer, tensors built by tests/torch/golden_torch.hpp), by quicksave's Python
save_torch_state_dict, and by Checkpointer.save_async (safetensors cases). Every file, shard,
pickle archive and index, must have the same name and the same bytes."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import quicksave
from conftest import golden_state_dict, load_golden

CPP_WRITER = os.environ.get("QUICKSAVE_CPP_WRITER")


def representable(case):
    """Cases both sides can write: no string values (C++ state dicts cannot hold them), no meta
    tensors (no bytes), and saves that succeed."""
    return all(t["kind"] == "tensor" and t["device"] != "meta" for t in case["input"])


def byte_identity_cases():
    cases = []
    for case in load_golden("save_cases.json")["save_cases"]:
        if representable(case) and case["id"] != "st_force_contiguous_false":
            cases.append({"id": case["id"], "input": case["input"], "kwargs": case["kwargs"]})
    for case in load_golden("split_cases.json")["torch_cases"]:
        if representable(case) and case["raised"] is None and case["id"] != "pattern_without_suffix":
            kwargs = {k: v for k, v in case["kwargs"].items() if k == "max_shard_size"}
            cases.append({"id": "split_" + case["id"], "input": case["input"], "kwargs": kwargs})
    return cases


def tree(root: Path):
    """relative path -> bytes, for every Hugging Face file under root (quicksave's checksum manifest,
    whose ranges follow each writer's staging chunks, is checked by test_crash_safety.py)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".quicksave-manifest.json")
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    if not CPP_WRITER:
        raise AssertionError("QUICKSAVE_CPP_WRITER is not set: run this suite through ctest (label python)")
    root = tmp_path_factory.mktemp("byte_identity")
    cases = byte_identity_cases()
    (root / "cases.json").write_text(json.dumps(cases))
    subprocess.run([CPP_WRITER, str(root / "cases.json"), str(root / "cpp")], check=True)
    with quicksave.Checkpointer(pinned_budget_bytes="256KB", chunk_bytes=4096) as ckpt:
        for case in cases:
            sd = golden_state_dict(case["input"])
            quicksave.save_torch_state_dict(sd, root / "python" / case["id"], **case["kwargs"])
            if case["kwargs"].get("safe_serialization", True):
                ckpt.save_async(sd, root / "async" / case["id"], **case["kwargs"]).committed().result()
    return root, cases


def test_enough_cases_are_compared(written):
    _, cases = written
    assert len(cases) >= 40
    assert any(c["kwargs"].get("safe_serialization") is False for c in cases)  # pickle archives too
    assert any(isinstance(c["kwargs"].get("max_shard_size"), int) and c["kwargs"]["max_shard_size"] < 100 for c in cases)


def test_python_files_equal_cpp_files(written):
    root, cases = written
    for case in cases:
        cpp = tree(root / "cpp" / case["id"])
        python = tree(root / "python" / case["id"])
        assert cpp, case["id"]
        assert sorted(python) == sorted(cpp), case["id"]
        for name in cpp:
            assert python[name] == cpp[name], (case["id"], name)


def test_async_files_equal_cpp_files(written):
    root, cases = written
    compared = 0
    for case in cases:
        if not case["kwargs"].get("safe_serialization", True):
            continue
        cpp = tree(root / "cpp" / case["id"])
        asynchronous = tree(root / "async" / case["id"])
        assert sorted(asynchronous) == sorted(cpp), case["id"]
        for name in cpp:
            assert asynchronous[name] == cpp[name], (case["id"], name)
        compared += 1
    assert compared >= 30
