"""Shared fixtures of the Python suites: the golden vectors (tests/data, copies of
shared/reference/golden) and real torch state dicts built from their descriptions.

golden_state_dict() builds tensors exactly as tests/torch/golden_torch.hpp does in C++ (one byte
storage per label, filled with ((i * 7) + fill * 31) % 251, each tensor a dtype/offset/shape/stride
view of it), so the C++ helper `python_cpp_writer` and Python see the same bytes."""

import json
import os
from pathlib import Path

import pytest
import torch

DATA_DIR = Path(os.environ.get("QUICKSAVE_TEST_DATA_DIR", Path(__file__).resolve().parents[1] / "data"))

TORCH_DTYPES = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.complex64,
}

# torch dtype name -> safetensors code (spec §7.2)
SAFETENSORS_CODES = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "int32": "I32", "int64": "I64", "float16": "F16",
    "bfloat16": "BF16", "float32": "F32", "float64": "F64", "complex64": "C64",
}


def load_golden(name: str) -> dict:
    with open(DATA_DIR / name, encoding="utf-8") as f:
        return json.load(f)


def golden_state_dict(entries) -> dict:
    """The state dict a golden `input` list describes (string entries included, as values)."""
    state_dict = {}
    storages = {}
    next_fill = 1
    for t in entries:
        if t["kind"] == "string":
            state_dict[t["name"]] = t["value"]
            continue
        dtype = TORCH_DTYPES[t["dtype"]]
        shape, stride = t["shape"], t["stride"]
        if t["device"] == "meta":
            state_dict[t["name"]] = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
            continue
        if t["storage_ptr_is_null"]:  # a fresh empty tensor: no allocation at all
            state_dict[t["name"]] = torch.empty(shape, dtype=dtype)
            continue
        label = t["storage"]
        if label not in storages:
            nbytes = t["storage_nbytes"]
            storages[label] = torch.arange(nbytes, dtype=torch.long).mul(7).add(next_fill * 31).remainder(251).to(torch.uint8)
            next_fill += 1
        itemsize = torch.empty((), dtype=dtype).element_size()
        view = torch.empty(0, dtype=dtype).set_(
            storages[label].storage().untyped(), t["storage_offset_bytes"] // itemsize, shape, stride
        )
        state_dict[t["name"]] = view
    return state_dict


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The C-order bytes of a tensor, computed by torch (independently of quicksave's writer)."""
    flat = tensor.contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def read_safetensors_header(path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


def read_safetensors_bytes(path) -> dict:
    """name -> the tensor's raw bytes, read with the format's own rules (not quicksave's reader)."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    return {name: data[8 + n + entry["data_offsets"][0] : 8 + n + entry["data_offsets"][1]] for name, entry in header.items()}


@pytest.fixture(scope="session")
def split_golden() -> dict:
    return load_golden("split_cases.json")


@pytest.fixture(scope="session")
def save_golden() -> dict:
    return load_golden("save_cases.json")


@pytest.fixture(scope="session")
def parse_size_golden() -> dict:
    return load_golden("parse_size_cases.json")
