"""quicksave bench --load: checkpoint loads against the usual loaders and the machine's limits, in one run.

A llama-like bf16 checkpoint of --size bytes is written once per shard size (--shards, e.g. 5GB and
500MB), then loaded --repeat times by each method, with a cold page cache (dropped before each
run; needs root) and a warm one (the same files read just before):

  owned memory:   quicksave.Loader().load(dir)                 vs safetensors.torch.load_file (each shard),
                  one byte of every page then read (load_file maps lazily: this is when it reads)
  into a model:   quicksave.serialization.load_torch_model     vs load_file + model.load_state_dict,
                  huggingface_hub.serialization.load_torch_model, torch.load(mmap=True) of a .bin + load_state_dict
  limits:         fio sequential read of the same files (best of a few queue depths and block sizes,
                  O_DIRECT, the cold limit) and a 2-thread memcpy of the same bytes (the warm limit).

Medians are reported, and each method's time as a ratio to the limit and to load_file + load_state_dict
measured in the same run. Loaders that need a GPU or are not installed (fastsafetensors, Run:ai Model
Streamer) are listed as such."""
import argparse
import gc
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

import quicksave
from quicksave import serialization as qs_serialization


def parse_size(text: str) -> int:
    return quicksave.parse_size_to_int(text)


def llama_shapes(total_bytes: int, hidden: int = 2048, intermediate: int = 5632, vocab: int = 32000):
    """Parameter names and shapes of a llama-style decoder, with as many layers as fit `total_bytes` of bf16."""
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    per_layer = 2 * (4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden)
    layers = max(1, (total_bytes - 2 * 2 * vocab * hidden) // per_layer)
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{name}.weight"] = (hidden, hidden)
        shapes[p + "mlp.gate_proj.weight"] = (intermediate, hidden)
        shapes[p + "mlp.up_proj.weight"] = (intermediate, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, intermediate)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    return shapes


class Flat(torch.nn.Module):
    """A module whose state dict has exactly the given names (nested submodules, like a transformer)."""

    def __init__(self, shapes):
        super().__init__()
        for name, shape in shapes.items():
            *path, leaf = name.split(".")
            module = self
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, torch.nn.Module())
                module = getattr(module, part)
            module.register_parameter(leaf, torch.nn.Parameter(torch.empty(shape, dtype=torch.bfloat16), requires_grad=False))


def touch(state):
    """Reads one byte of every page of every tensor: loaders that map lazily (safetensors' load_file)
    read the file here, so "owned" means the bytes are really in memory for every method."""
    for t in state.values():
        if t.numel():
            t.reshape(-1).view(torch.uint8)[::4096].sum()
    return state


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def warm(files):
    for f in files:
        with open(f, "rb") as handle:
            while handle.read(64 << 20):
                pass


def fio_read_seconds(files, fio):
    """The best time fio needs to read every file once, front to back (O_DIRECT, one job over the
    files in turn), over a few queue depths and block sizes; the page cache is dropped first."""
    best = None
    for iodepth, bs in ((16, "1M"), (32, "4M"), (8, "16M")):
        drop_caches()
        out = subprocess.run(
            [fio, "--name=read", "--filename=" + ":".join(str(f) for f in files), "--file_service_type=sequential",
             "--rw=read", f"--bs={bs}", f"--iodepth={iodepth}", "--direct=1", "--ioengine=io_uring", "--output-format=json"],
            check=True, capture_output=True, text=True,
        ).stdout
        job = json.loads(out)["jobs"][0]["read"]
        seconds = job["io_bytes"] / max(job["bw_bytes"], 1)
        best = seconds if best is None else min(best, seconds)
    return best


def memcpy_seconds(nbytes, threads=2):
    src = torch.empty(nbytes, dtype=torch.uint8)
    dst = torch.empty(nbytes, dtype=torch.uint8)
    src.fill_(1)
    dst.fill_(2)
    torch.set_num_threads(threads)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4GB")
    parser.add_argument("--shards", default="5GB,500MB", help="shard sizes, comma-separated (one checkpoint each)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write the checkpoints (default: a folder in the current one)")
    parser.add_argument("--no-cold", action="store_true", help="skip cold-cache runs (they need root)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    total = parse_size(args.size)
    shapes = llama_shapes(total)
    root = Path(args.dir or tempfile.mkdtemp(prefix="quicksave-load-bench-", dir="."))
    root.mkdir(parents=True, exist_ok=True)
    cold_ok = not args.no_cold
    if cold_ok:
        try:
            drop_caches()
        except OSError as error:
            print(f"cold runs skipped: cannot drop the page cache ({error})")
            cold_ok = False
    fio = shutil.which("fio")
    print(f"model: {len(shapes)} bf16 tensors, {sum(2 * torch.Size(s).numel() for s in shapes.values()) / 1e9:.2f} GB; "
          f"quicksave loader settings from QUICKSAVE_LOAD_* (default: pread on 16 threads, 16 MiB reads)")
    for name in ("fastsafetensors", "runai_model_streamer"):
        print(f"{name}: " + ("installed but needs a GPU here: not run" if importlib.util.find_spec(name) else "not installed: not run"))

    import safetensors.torch
    import huggingface_hub.serialization as hf_serialization

    source = Flat(shapes)
    for p in source.parameters():
        p.data.view(torch.int16).random_(-30000, 30000)
    model = Flat(shapes)
    results = {}
    try:
        for shard_size in args.shards.split(","):
            folder = root / f"shards-{shard_size}"
            qs_serialization.save_torch_model(source, folder, max_shard_size=shard_size)
            files = sorted(folder.glob("*.safetensors"))
            nbytes = sum(f.stat().st_size for f in files)
            bin_file = root / "pytorch_model.bin"
            if not bin_file.exists() and "mmap" in __import__("inspect").signature(torch.load).parameters:
                torch.save(source.state_dict(), bin_file)

            def st_owned():
                out = {}
                for f in files:
                    out.update(safetensors.torch.load_file(f))
                return touch(out)

            def st_model():
                for f in files:
                    model.load_state_dict(safetensors.torch.load_file(f), strict=False)

            has_mmap = "mmap" in __import__("inspect").signature(torch.load).parameters
            methods = {
                "quicksave Loader (owned)": lambda: touch(quicksave.Loader().load(folder)),
                "safetensors load_file (maps; pages touched)": st_owned,
                "quicksave load_torch_model": lambda: qs_serialization.load_torch_model(model, folder),
                "load_file + load_state_dict": st_model,
                "huggingface_hub load_torch_model": lambda: hf_serialization.load_torch_model(model, folder),
            }
            if has_mmap:
                methods["torch.load(mmap=True) .bin + load_state_dict"] = lambda: model.load_state_dict(torch.load(bin_file, mmap=True))
            elif shard_size == args.shards.split(",")[0]:
                print(f"torch.load(mmap=True): torch {torch.__version__} has no mmap: not run")
            limits = {"memcpy 2 threads": memcpy_seconds(nbytes)}
            if fio and cold_ok:
                limits["fio direct read"] = fio_read_seconds(files, fio)
            rows = {}
            for cache in (["cold", "warm"] if cold_ok else ["warm"]):
                for name, run in methods.items():
                    times = []
                    for _ in range(args.repeat):
                        inputs = [bin_file] if ".bin" in name else files
                        if cache == "cold":
                            drop_caches()
                        else:
                            warm(inputs)
                        gc.collect()
                        start = time.perf_counter()
                        result = run()
                        times.append(time.perf_counter() - start)
                        del result
                    rows[(cache, name)] = statistics.median(times)
            # Every model load must leave the model equal to the source (checked once, after the runs).
            qs_serialization.load_torch_model(model, folder)
            for (n, a), b in zip(source.state_dict().items(), model.state_dict().values()):
                assert torch.equal(a.view(torch.int16), b.view(torch.int16)), f"{n} differs after quicksave's load"
            print(f"\n== {len(files)} shard(s) of at most {shard_size}, {nbytes / 1e9:.2f} GB, median of {args.repeat}")
            for limit, seconds in limits.items():
                print(f"  limit  {limit:<46} {seconds:7.3f} s  {nbytes / seconds / 1e9:6.2f} GB/s")
            for cache in (["cold", "warm"] if cold_ok else ["warm"]):
                base = rows[(cache, "load_file + load_state_dict")]
                limit = limits.get("fio direct read" if cache == "cold" else "memcpy 2 threads")
                for name in methods:
                    seconds = rows[(cache, name)]
                    vs_limit = f"{limit / seconds:5.2f}x of the limit" if limit else ""
                    print(f"  {cache:<5}  {name:<46} {seconds:7.3f} s  {nbytes / seconds / 1e9:6.2f} GB/s  "
                          f"{base / seconds:5.2f}x load_file+load_state_dict  {vs_limit}")
            results[shard_size] = {"bytes": nbytes, "limits": limits, "runs": {f"{c}/{n}": s for (c, n), s in rows.items()}}
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
