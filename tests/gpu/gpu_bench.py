#!/usr/bin/env python3
"""GPU save benchmark, run by scripts/device_check.sh on a GPU machine.

Builds a bf16 state dict of realistic layer shapes (a Llama-3-8B-like decoder: embeddings,
attention q/k/v/o, MLP gate/up/down, norms, lm_head; layers added until --gib is reached) on the
GPU, then, on those very tensors in this one process:
  * the pinned device-to-host bandwidth: cudaMemcpyAsync of the same bytes into a page-locked ring
    (the floor for any GPU-to-host staging), through libquicksave_gpu_bench;
  * quicksave: Checkpointer::save_async, with a pinned pool that holds the whole state dict:
    how long save_async blocks the caller, the time to `staged` (set against the D2H floor) and
    to `committed` (files fsynced and published); the first save and a warm one;
  * huggingface_hub.save_torch_state_dict, safetensors.torch.save_file and
    torch.distributed.checkpoint.async_save: the time they block, their total time, and the time
    an os.sync() then takes to make their bytes durable (quicksave's `committed` includes fsync);
  * whether quicksave's files equal huggingface_hub's byte for byte;
  * with time left, quicksave with a 2 GiB pool (staging bounded by the disk).
The results go to --out as JSON, rewritten after every step so that a timeout keeps what was
measured; a step that would not finish before --deadline is skipped and says so.
"""
import argparse
import ctypes
import json
import os
import platform
import shutil
import sys
import time
import traceback

import torch

GIB = 1 << 30


def now():
    return time.monotonic()


def fs_type(path):
    """Filesystem type of the mount holding `path` (tmpfs makes fsync free and timings moot)."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and (path == fields[1] or path.startswith(fields[1].rstrip("/") + "/")):
                    if len(fields[1]) >= len(best):
                        best, kind = fields[1], fields[2]
    except OSError:
        pass
    return kind


def mem_available():
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def llama_like_state_dict(target_bytes, device):
    """Llama-3-8B shapes (hidden 4096, MLP 14336, 8 KV heads of 128, vocab 128256), bf16; below
    4 GiB (script checks) a model a quarter as wide, whose embeddings alone do not exceed the target."""
    if target_bytes >= 4 * GIB:
        hidden, inter, kv, vocab = 4096, 14336, 1024, 128256
    else:
        hidden, inter, kv, vocab = 1024, 3584, 256, 32000
    shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    tail = [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]

    def nbytes(shape):
        n = 2
        for s in shape:
            n *= s
        return n

    total = sum(nbytes(s) for _, s in shapes + tail)
    layer = 0
    while total < target_bytes:
        p = f"model.layers.{layer}."
        for name, shape in [
            ("input_layernorm.weight", (hidden,)),
            ("self_attn.q_proj.weight", (hidden, hidden)),
            ("self_attn.k_proj.weight", (kv, hidden)),
            ("self_attn.v_proj.weight", (kv, hidden)),
            ("self_attn.o_proj.weight", (hidden, hidden)),
            ("post_attention_layernorm.weight", (hidden,)),
            ("mlp.gate_proj.weight", (inter, hidden)),
            ("mlp.up_proj.weight", (inter, hidden)),
            ("mlp.down_proj.weight", (hidden, inter)),
        ]:
            shapes.append((p + name, shape))
            total += nbytes(shape)
        layer += 1
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    sd = {}
    for name, shape in shapes + tail:
        t = torch.empty(shape, dtype=torch.bfloat16, device=device)
        t.normal_(generator=generator)
        sd[name] = t
    return sd, layer


def describe(sd):
    out = []
    for name, t in sd.items():
        storage = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()  # torch < 2
        out.append({
            "name": name,
            "dtype": "BF16" if t.dtype == torch.bfloat16 else str(t.dtype),
            "shape": list(t.shape),
            "strides": list(t.stride()),
            "ptr": t.data_ptr(),
            "device": t.device.index if t.is_cuda else -1,
            "storage_ptr": storage.data_ptr(),
            "storage_nbytes": storage.nbytes(),
        })
    return out


class Quicksave:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        for fn in (self.lib.qs_bench_save, self.lib.qs_bench_d2h):
            fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
            fn.restype = ctypes.c_int

    def _call(self, fn, request):
        out = ctypes.create_string_buffer(1 << 20)
        fn(json.dumps(request).encode(), out, len(out))
        result = json.loads(out.value.decode())
        if "error" in result:
            raise RuntimeError(result["error"])
        return result

    def save(self, request):
        return self._call(self.lib.qs_bench_save, request)

    def d2h(self, request):
        return self._call(self.lib.qs_bench_d2h, request)


def files_equal(a, b, deadline):
    """Same file names, sizes and bytes in directories a and b (None if out of time)."""
    names_a = sorted(os.listdir(a))
    names_b = sorted(os.listdir(b))
    if names_a != names_b:
        return {"equal": False, "why": f"names differ: {names_a} vs {names_b}"}
    for name in names_a:
        pa, pb = os.path.join(a, name), os.path.join(b, name)
        if os.path.getsize(pa) != os.path.getsize(pb):
            return {"equal": False, "why": f"{name}: sizes {os.path.getsize(pa)} vs {os.path.getsize(pb)}"}
        with open(pa, "rb") as fa, open(pb, "rb") as fb:
            offset = 0
            while True:
                if now() > deadline:
                    return None
                x, y = fa.read(64 << 20), fb.read(64 << 20)
                if x != y:
                    return {"equal": False, "why": f"{name}: bytes differ near offset {offset}"}
                if not x:
                    break
                offset += len(x)
    return {"equal": True, "files": names_a}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True, help="libquicksave_gpu_bench.so")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--dir", required=True, help="scratch directory on the disk to measure (emptied)")
    ap.add_argument("--gib", type=float, default=10.0, help="state dict size in GiB")
    ap.add_argument("--deadline", type=float, default=0, help="time.time() by which to be done")
    ap.add_argument("--chunk-mib", type=int, default=32)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: the same steps on CPU tensors, to check this script where there is no GPU")
    args = ap.parse_args()

    wall_deadline = args.deadline or (time.time() + 420)
    deadline = now() + (wall_deadline - time.time())
    results = {"ok": False, "steps": {}, "skipped": []}

    def write():
        with open(args.out + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(args.out + ".tmp", args.out)

    def left():
        return deadline - now()

    def step(name, fn, needs_s):
        """Runs fn() if needs_s seconds are left; records its result or its error."""
        if left() < needs_s:
            results["skipped"].append(f"{name}: {left():.0f} s left, needs about {needs_s:.0f} s")
            write()
            return None
        t = now()
        try:
            value = fn()
            results["steps"][name] = value if isinstance(value, dict) else {"result": value}
        except Exception as e:  # a baseline failing must not hide the others
            value = None
            results["steps"][name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
        results["steps"][name]["step_s"] = now() - t
        write()
        return value

    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        results["error"] = "torch sees no CUDA device"
        write()
        return 1

    def synchronize():
        if on_gpu:
            torch.cuda.synchronize()

    os.makedirs(args.dir, exist_ok=True)
    free = shutil.disk_usage(args.dir).free
    target = int(args.gib * GIB)
    # Two copies side by side (quicksave's and huggingface_hub's, compared) plus headroom.
    if 2 * target + 4 * GIB > free:
        target = max(GIB, (free - 4 * GIB) // 2)
        results["note"] = f"disk has {free / GIB:.1f} GiB free: state dict reduced to {target / GIB:.1f} GiB"
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for module in ("safetensors", "huggingface_hub"):
        try:
            versions[module] = __import__(module).__version__
        except Exception as e:
            versions[module] = f"unavailable: {e}"
    results["environment"] = {
        "gpu": torch.cuda.get_device_name(0) if on_gpu else None,
        "gpu_count": torch.cuda.device_count() if on_gpu else 0,
        "versions": versions,
        "bench_dir": os.path.realpath(args.dir),
        "bench_fs": fs_type(args.dir),
        "disk_free_gib": free / GIB,
        "mem_available_gib": mem_available() / GIB,
        "cpus": os.cpu_count(),
    }

    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    t = now()
    sd, layers = llama_like_state_dict(target, device)
    synchronize()
    total = sum(x.numel() * x.element_size() for x in sd.values())
    results["state_dict"] = {"bytes": total, "gib": total / GIB, "tensors": len(sd), "layers": layers,
                             "dtype": "bfloat16", "make_s": now() - t}
    write()
    qs = Quicksave(args.lib)
    tensors = describe(sd)
    chunk = args.chunk_mib << 20
    shard = "5GB"

    def fresh(name):
        path = os.path.join(args.dir, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def remove(*names):
        for name in names:
            shutil.rmtree(os.path.join(args.dir, name), ignore_errors=True)

    def timed_sync():
        t0 = now()
        os.sync()
        return now() - t0

    # 1. The D2H floor.
    d2h = step("pinned_d2h", lambda: qs.d2h({"tensors": tensors, "pinned_bytes": GIB, "repeats": 3}), 20)

    # 2. quicksave, the whole state dict in the pool.
    budget = (total + chunk - 1) // chunk * chunk + chunk
    budget = min(budget, int(mem_available() * 0.5) // chunk * chunk)

    def quicksave_full():
        synchronize()
        r = qs.save({"tensors": tensors, "directory": fresh("quicksave"), "repeats": 2, "max_shard_size": shard,
                     "checkpointer": {"pinned_budget_bytes": budget, "chunk_bytes": chunk, "worker_threads": 4,
                                      "queue_depth": 32}})
        r["pinned_budget_bytes"] = budget
        if d2h and "best_s" in d2h:
            for run in r["runs"]:
                run["staged_over_d2h"] = run["staged_s"] / d2h["best_s"]
                run["staged_gbps"] = total / run["staged_s"] / 1e9
                run["committed_gbps"] = total / run["committed_s"] / 1e9
        return r

    qs_result = step("quicksave", quicksave_full, 60)
    # Keep the last run's files (compared with huggingface_hub's below), drop the others.
    qs_files = None
    if qs_result and qs_result.get("runs"):
        qs_files = qs_result["runs"][-1]["directory"]
        for run in qs_result["runs"][:-1]:
            shutil.rmtree(run["directory"], ignore_errors=True)
    per_save = 60.0
    if qs_result and qs_result.get("runs"):
        per_save = max(qs_result["runs"][-1]["committed_s"] * 2.5, 20.0)

    # 3. huggingface_hub.save_torch_state_dict, then the comparison with quicksave's files.
    def hf():
        from huggingface_hub import save_torch_state_dict
        synchronize()
        path = fresh("hf")
        t0 = now()
        save_torch_state_dict(sd, path, max_shard_size=shard)
        total_s = now() - t0
        return {"blocked_s": total_s, "total_s": total_s, "sync_after_s": timed_sync()}

    step("huggingface_hub.save_torch_state_dict", hf, per_save)
    if qs_files and os.path.isdir(qs_files) and os.path.isdir(os.path.join(args.dir, "hf")):
        step("quicksave_equals_huggingface_hub",
             lambda: files_equal(qs_files, os.path.join(args.dir, "hf"), deadline - 5)
             or {"equal": None, "why": "out of time"}, 15)
    remove("quicksave", "hf")

    # 4. safetensors.torch.save_file, one file.
    def safetensors_save():
        from safetensors.torch import save_file
        synchronize()
        path = fresh("safetensors")
        t0 = now()
        save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        total_s = now() - t0
        return {"blocked_s": total_s, "total_s": total_s, "sync_after_s": timed_sync()}

    step("safetensors.torch.save_file", safetensors_save, per_save)
    remove("safetensors")

    # 5. torch.distributed.checkpoint.async_save (single process; a Gloo group of one if needed).
    def dcp_async():
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp
        synchronize()
        path = fresh("dcp")
        note = None
        t0 = now()
        try:
            future = dcp.async_save(sd, checkpoint_id=path)
        except Exception as e:  # some versions want a process group for async saves
            note = f"without a process group: {type(e).__name__}: {e}; retried in a Gloo group of one"
            if not dist.is_initialized():
                dist.init_process_group("gloo", init_method="file://" + os.path.join(args.dir, "pg-store"),
                                        rank=0, world_size=1)
            path = fresh("dcp")
            t0 = now()
            future = dcp.async_save(sd, checkpoint_id=path)
        blocked = now() - t0
        # A Future, or (with a non-blocking stager) a response holding the staging and upload futures.
        for attribute in ("staging_completion", "upload_completion"):
            if hasattr(future, attribute):
                getattr(future, attribute).result()
        if hasattr(future, "result"):
            future.result()
        total_s = now() - t0
        r = {"blocked_s": blocked, "total_s": total_s, "sync_after_s": timed_sync()}
        if note:
            r["note"] = note
        return r

    step("torch.distributed.checkpoint.async_save", dcp_async, per_save)
    remove("dcp", "pg-store")

    # 6. With time left: quicksave with a pool far smaller than the state dict.
    def quicksave_bounded():
        synchronize()
        r = qs.save({"tensors": tensors, "directory": fresh("quicksave-bounded"), "repeats": 1,
                     "max_shard_size": shard,
                     "checkpointer": {"pinned_budget_bytes": 2 * GIB, "chunk_bytes": chunk, "worker_threads": 4,
                                      "queue_depth": 32}})
        r["pinned_budget_bytes"] = 2 * GIB
        return r

    step("quicksave_2GiB_pool", quicksave_bounded, per_save)
    remove("quicksave-bounded")

    # The headline: seconds for the whole state dict, quicksave's warm run beside the baselines.
    summary = {"bytes": total}
    if d2h and "best_s" in d2h:
        summary["pinned_d2h_s"] = d2h["best_s"]
        summary["pinned_d2h_gbps"] = d2h.get("gbps")
    runs = (qs_result or {}).get("runs") or []
    if runs:
        warm = runs[-1]
        summary["quicksave"] = {k: warm.get(k) for k in ("blocked_s", "staged_s", "committed_s", "staged_over_d2h")}
        summary["quicksave"]["first_save"] = {k: runs[0].get(k) for k in ("blocked_s", "staged_s", "committed_s")}
    for name in ("huggingface_hub.save_torch_state_dict", "safetensors.torch.save_file",
                 "torch.distributed.checkpoint.async_save"):
        r = results["steps"].get(name)
        if isinstance(r, dict) and "error" not in r:
            summary[name] = {k: r.get(k) for k in ("blocked_s", "total_s", "sync_after_s")}
    equal = results["steps"].get("quicksave_equals_huggingface_hub")
    if isinstance(equal, dict):
        summary["quicksave_equals_huggingface_hub"] = equal.get("equal")
    results["summary"] = summary
    results["ok"] = all(isinstance(v, dict) and "error" not in v for v in results["steps"].values())
    results["left_s"] = left()
    write()
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
