#!/usr/bin/env python3
"""The Python side of `quicksave bench --python`.

Times, on the same tensors as the C++ side (read from a safetensors file written before any
timing), the ways Python users save a state dict:
  python_torch_save                  torch.save(state_dict, path)
  python_safetensors_save_file       safetensors.torch.save_file(state_dict, path)
  python_hf_save_torch_state_dict    huggingface_hub.save_torch_state_dict(state_dict, dir)
each followed by an fsync of the files and of the folder. blocked_s is the library call, durable_s
the call plus the fsyncs. Before every timed run, outside the timing: the previous output is
deleted, everything synced and (with --drop-caches, when permitted) the page cache dropped, the
same preparation as the C++ methods get. Prints one JSON object on stdout.

Works with Debian's /usr/bin/python3 (torch only) and with the project's .venv (which also has
safetensors and huggingface_hub); a library that is missing is reported as unavailable.
"""
import argparse
import json
import os
import shutil
import sys
import time


def load_safetensors(path):
    """A minimal safetensors reader (the real one may be absent): every tensor gets its own
    storage, as in a real model, so that torch.save writes each exactly once."""
    import torch

    dtypes = {
        "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
        "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    }
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = bytearray(os.path.getsize(path) - 8 - n)
        f.readinto(data)
    state_dict = {}
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    entries.sort(key=lambda kv: kv[1]["data_offsets"][0])
    for name, info in entries:
        dtype = dtypes[info["dtype"]]
        begin, end = info["data_offsets"]
        if end == begin:
            tensor = torch.empty(info["shape"], dtype=dtype)
        else:
            count = (end - begin) // torch.empty((), dtype=dtype).element_size()
            tensor = torch.frombuffer(data, dtype=dtype, count=count, offset=begin).reshape(info["shape"]).clone()
        state_dict[name] = tensor
    del data
    return state_dict


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare(out, drop_caches):
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    if drop_caches:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1\n")
        except OSError:
            pass
    os.makedirs(out)


def method_torch_save(state_dict, out):
    import torch

    path = os.path.join(out, "model.pt")
    t0 = time.perf_counter()
    torch.save(state_dict, path)
    t1 = time.perf_counter()
    fsync_path(path)
    fsync_path(out)
    return t1 - t0, time.perf_counter() - t0


def method_safetensors(state_dict, out):
    from safetensors.torch import save_file

    path = os.path.join(out, "model.safetensors")
    t0 = time.perf_counter()
    save_file(state_dict, path, metadata={"format": "pt"})
    t1 = time.perf_counter()
    fsync_path(path)
    fsync_path(out)
    return t1 - t0, time.perf_counter() - t0


def method_hf(state_dict, out):
    from huggingface_hub import save_torch_state_dict

    t0 = time.perf_counter()
    save_torch_state_dict(state_dict, out)
    t1 = time.perf_counter()
    for name in sorted(os.listdir(out)):
        fsync_path(os.path.join(out, name))
    fsync_path(out)
    return t1 - t0, time.perf_counter() - t0


def availability():
    """(name, label, function, available, note) of every method."""
    import torch

    methods = [("python_torch_save", "Python torch.save", method_torch_save, True, "torch " + torch.__version__)]
    try:
        import safetensors

        methods.append(("python_safetensors_save_file", "Python safetensors save_file", method_safetensors, True,
                        "safetensors " + safetensors.__version__))
    except ImportError as e:
        methods.append(("python_safetensors_save_file", "Python safetensors save_file", None, False, str(e)))
    try:
        import huggingface_hub

        methods.append(("python_hf_save_torch_state_dict", "Python HF save_torch_state_dict", method_hf, True,
                        "huggingface_hub " + huggingface_hub.__version__))
    except ImportError as e:
        methods.append(("python_hf_save_torch_state_dict", "Python HF save_torch_state_dict", None, False, str(e)))
    return methods


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="safetensors file holding the state dict")
    parser.add_argument("--out", required=True, help="output folder (emptied before every run, removed at the end)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--drop-caches", action="store_true")
    args = parser.parse_args()

    methods = availability()
    state_dict = load_safetensors(args.input)
    samples = {name: [] for name, *_ in methods}
    for _ in range(args.repeat):
        for name, label, function, available, note in methods:
            if not available:
                continue
            prepare(args.out, args.drop_caches)
            blocked, durable = function(state_dict, args.out)
            samples[name].append({"blocked_s": blocked, "durable_s": durable})
    shutil.rmtree(args.out, ignore_errors=True)
    result = {
        "python": sys.version.split()[0],
        "methods": [
            {"name": name, "label": label, "available": available, "note": note, "samples": samples[name]}
            for name, label, function, available, note in methods
        ],
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
