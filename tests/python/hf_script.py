"""A checkpointing script written against `huggingface_hub.serialization`. It only touches the
module it is given, so the same code runs with `from huggingface_hub import serialization` and
with `from quicksave import serialization`:

    python hf_script.py huggingface_hub OUT_DIR     # or: quicksave OUT_DIR

It trains a small tied-embedding model for a few SGD steps, saves it sharded, single-file and as
pickles, reloads each into a fresh model, checks the weights, and prints a JSON report of what it
wrote and what the loads returned (the test compares the reports of both implementations)."""

import hashlib
import importlib
import json
import os
import sys

import torch


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(64, 16)
        self.block = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 64, bias=False)
        self.head.weight = self.embed.weight  # tied, as language models do
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def forward(self, tokens):
        return self.head(self.norm(self.block(self.embed(tokens))))


def train(model, steps):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        tokens = torch.randint(0, 64, (8, 5), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(tokens).reshape(-1, 64), tokens.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.steps += 1


def describe_file(path):
    """Exact bytes for files whose content is deterministic; for the rest (a safetensors header
    whose metadata has several keys is in hash-map order; pickles differ by writer), the content."""
    data = open(path, "rb").read()
    if path.endswith(".safetensors"):
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        metadata = header.pop("__metadata__", {})
        out = {"metadata": metadata, "tensors": header, "header_bytes": n,
               "data_sha256": hashlib.sha256(data[8 + n :]).hexdigest()}
        if len(metadata) <= 1:
            out["sha256"] = hashlib.sha256(data).hexdigest()
        return out
    if path.endswith(".bin"):
        loaded = torch.load(path, weights_only=True)
        return {name: hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
                for name, t in loaded.items()}
    return {"sha256": hashlib.sha256(data).hexdigest()}


def run(serialization, out_dir):
    torch.manual_seed(0)
    model = TinyLM()
    train(model, 3)

    report = {}
    sharded = os.path.join(out_dir, "sharded")
    os.makedirs(sharded, exist_ok=True)
    serialization.save_torch_state_dict(model.state_dict(), sharded, max_shard_size="4KB")
    single = os.path.join(out_dir, "single")
    os.makedirs(single, exist_ok=True)
    serialization.save_torch_model(model, single, metadata={"step": "3"})
    pickles = os.path.join(out_dir, "pickles")
    os.makedirs(pickles, exist_ok=True)
    serialization.save_torch_state_dict(model.state_dict(), pickles, max_shard_size="4KB", safe_serialization=False)

    split = serialization.split_torch_state_dict_into_shards(model.state_dict(), max_shard_size="4KB")
    report["split"] = {"is_sharded": split.is_sharded, "metadata": split.metadata,
                       "filename_to_tensors": split.filename_to_tensors}

    report["loads"] = {}
    for name, path, kwargs in [("sharded", sharded, {}), ("single", single, {}), ("pickles", pickles, {"safe": False}),
                               ("single_file", os.path.join(single, "model.safetensors"), {})]:
        torch.manual_seed(123)
        fresh = TinyLM()
        result = serialization.load_torch_model(fresh, path, **kwargs)
        for key, value in model.state_dict().items():
            assert torch.equal(fresh.state_dict()[key], value), (name, key)
        report["loads"][name] = {"missing_keys": sorted(result.missing_keys), "unexpected_keys": sorted(result.unexpected_keys)}

    report["files"] = {}
    for root, _, files in os.walk(out_dir):
        for f in sorted(files):
            if f.endswith(".quicksave-manifest.json"):
                continue  # quicksave's checksum manifest: not a file the reference writes
            path = os.path.join(root, f)
            report["files"][os.path.relpath(path, out_dir)] = describe_file(path)
    return report


if __name__ == "__main__":
    implementation, out = sys.argv[1], sys.argv[2]
    module = importlib.import_module("huggingface_hub.serialization" if implementation == "huggingface_hub" else "quicksave.serialization")
    print(json.dumps(run(module, out), sort_keys=True))
