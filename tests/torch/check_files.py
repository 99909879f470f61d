#!/usr/bin/env python3
"""Independent check of the files quicksave wrote (tests/torch/write_fixtures.cpp), using only the
Python standard library, numpy and Python's torch: safetensors files are parsed from the byte
layout of the format, not through quicksave; .bin files are opened with torch.load.

usage: check_files.py FIXTURE_DIR   (exit status 0 when every check passes)"""
import glob
import json
import math
import os
import struct
import sys

import numpy as np
import torch

ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4,
            "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}
CODE_OF_TORCH = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "int32": "I32", "int64": "I64",
                 "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64", "complex64": "C64"}
NUMPY_OF_CODE = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64,
                 "F16": np.float16, "BF16": np.uint16, "F32": np.float32, "F64": np.float64, "C64": np.complex64}
ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
         "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def parse_safetensors(path):
    """Returns (metadata, {name: (dtype, shape, bytes)}) after checking every layout rule."""
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    raw = data[8:8 + n]
    check(n % 8 == 0, f"{path}: header length {n} is not a multiple of 8")
    text = raw.decode("utf-8")
    check(text == text.rstrip(" ") + " " * (len(text) - len(text.rstrip(" "))), f"{path}: padding is not spaces")
    check(" " not in text.rstrip(" ").replace('" ', '"').split('"')[0], f"{path}: header is not compact")
    header = json.loads(text)
    metadata = header.pop("__metadata__", None)
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"])
    # writer order: dtype descending in enum order, then name
    expected_order = sorted(header.items(), key=lambda kv: (-ORDER.index(kv[1]["dtype"]), kv[0].encode()))
    check([k for k, _ in entries] == [k for k, _ in expected_order], f"{path}: tensors not in safetensors order")
    position = 0
    tensors = {}
    body = data[8 + n:]
    for name, info in entries:
        begin, end = info["data_offsets"]
        check(begin == position, f"{path}: {name} starts at {begin}, expected {position}")
        size = math.prod(info["shape"]) * ITEMSIZE[info["dtype"]]
        check(end - begin == size, f"{path}: {name} has {end - begin} bytes, shape needs {size}")
        tensors[name] = (info["dtype"], info["shape"], body[begin:end])
        position = end
    check(position == len(body), f"{path}: data is {len(body)} bytes, tensors cover {position}")
    return metadata, tensors


def check_safetensors_dir(folder, spec):
    files = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        files[os.path.basename(path)] = parse_safetensors(path)
    index_path = os.path.join(folder, "model.safetensors.index.json")
    aliases = {a: k for a, k in spec["aliases"]}
    stored = {}
    for fname, (metadata, tensors) in files.items():
        check(metadata is not None and metadata.get("format") == "pt", f"{folder}/{fname}: no format=pt metadata")
        for name, value in tensors.items():
            check(name not in stored, f"{folder}: {name} stored twice")
            stored[name] = (fname, value)
    if os.path.exists(index_path):
        index_text = open(index_path, encoding="ascii").read()
        index = json.loads(index_text)
        check(index_text == json.dumps(index, indent=2), f"{index_path}: not json.dump(indent=2) bytes")
        check(set(index["weight_map"]) == set(stored), f"{index_path}: weight_map keys differ from the files' tensors")
        for name, fname in index["weight_map"].items():
            check(stored.get(name, (None,))[0] == fname, f"{index_path}: {name} mapped to {fname}")
        total = sum(len(v[2]) for _, v in stored.values())
        check(index["metadata"]["total_size"] == total, f"{index_path}: total_size {index['metadata']['total_size']} != {total}")
        for alias, kept in aliases.items():
            check(index["metadata"].get(alias) == kept, f"{index_path}: alias {alias} -> {kept} missing")
    else:
        check(len(files) == 1, f"{folder}: {len(files)} files and no index")
        metadata = next(iter(files.values()))[0]
        for alias, kept in aliases.items():
            check(metadata.get(alias) == kept, f"{folder}: alias {alias} -> {kept} missing from the header")
    for t in spec["tensors"]:
        name = t["name"]
        source = bytes.fromhex(t["hex"])
        if name in aliases:
            check(name not in stored, f"{folder}: alias {name} stored")
            check(stored[aliases[name]][1][2] == source, f"{folder}: alias {name} differs from {aliases[name]}")
            continue
        if name not in stored:
            check(False, f"{folder}: {name} missing")
            continue
        dtype, shape, data = stored[name][1]
        check(dtype == CODE_OF_TORCH[t["dtype"]], f"{folder}: {name} dtype {dtype}")
        check(shape == t["shape"], f"{folder}: {name} shape {shape} != {t['shape']}")
        np_type = NUMPY_OF_CODE[dtype]
        got = np.frombuffer(data, dtype=np_type).reshape(shape)
        want = np.frombuffer(source, dtype=np_type).reshape(t["shape"])
        check(np.array_equal(got, want, equal_nan=dtype not in ("BOOL", "U8", "I8", "I16", "I32", "I64", "BF16")),
              f"{folder}: {name} values differ")
    check(len(stored) == len(spec["tensors"]) - len(aliases), f"{folder}: {len(stored)} tensors stored")


def check_pickle_dir(folder, spec):
    index_path = os.path.join(folder, "pytorch_model.bin.index.json")
    if os.path.exists(index_path):
        index = json.load(open(index_path))
        shard_files = sorted(set(index["weight_map"].values()))
    else:
        shard_files = ["pytorch_model.bin"]
    loaded = {}
    for fname in shard_files:
        part = torch.load(os.path.join(folder, fname), weights_only=True)
        for name, tensor in part.items():
            loaded[name] = tensor
    for t in spec["tensors"]:
        tensor = loaded.get(t["name"])
        if tensor is None:
            check(False, f"{folder}: {t['name']} missing")
            continue
        check(list(tensor.shape) == t["shape"], f"{folder}: {t['name']} shape")
        check(str(tensor.dtype) == "torch." + t["dtype"], f"{folder}: {t['name']} dtype {tensor.dtype}")
        got = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        check(got == bytes.fromhex(t["hex"]), f"{folder}: {t['name']} values differ")
    for a, b in spec.get("shared", []):
        check(loaded[a].storage().data_ptr() == loaded[b].storage().data_ptr(), f"{folder}: {a} and {b} do not share storage")


def main():
    root = sys.argv[1]
    manifest = json.load(open(os.path.join(root, "manifest.json")))
    for folder, spec in manifest.items():
        if spec["format"] == "safetensors":
            check_safetensors_dir(os.path.join(root, folder), spec)
        else:
            check_pickle_dir(os.path.join(root, folder), spec)
    count = sum(len(s["tensors"]) for s in manifest.values())
    for f in failures:
        print("FAIL:", f)
    print(f"checked {len(manifest)} checkpoints, {count} tensors: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
