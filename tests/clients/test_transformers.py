"""Real clients (issue 14): transformers, the newest release (the wheel line's venv), with small
models built from configs (nothing is downloaded).

1. AutoModelForCausalLM.from_pretrained loads what quicksave saved, for a Llama-like model and a
   GPT-2 (tied input/output embeddings), saved synchronously (serialization.save_torch_state_dict)
   and asynchronously (Checkpointer.save_async), sharded and single-file: every tensor of the
   loaded model equals the original's, and the logits are equal.
2. quicksave loads transformers' own output: save_pretrained (sharded safetensors) and a
   pytorch_model.bin written with torch.save (transformers 5 writes safetensors only; .bin is
   what older releases and many hub repositories still hold).
"""

import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

import quicksave
from quicksave import serialization

VOCAB = 96


def llama() -> torch.nn.Module:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    return AutoModelForCausalLM.from_config(config)


def gpt2() -> torch.nn.Module:
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=1)
    return AutoModelForCausalLM.from_config(config)


MODELS = {"llama": llama, "gpt2": gpt2}


def build(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = MODELS[kind]().eval()
    # Values unlike any initialization, so that a tensor left at its initial value is caught.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))


def assert_same_model(expected: torch.nn.Module, actual: torch.nn.Module):
    want, got = expected.state_dict(), actual.state_dict()
    assert sorted(want) == sorted(got)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    with torch.no_grad():
        assert torch.equal(expected(tokens()).logits, actual(tokens()).logits)


def save_with_quicksave(model, directory, how: str, sharded: bool):
    size = "40KB" if sharded else "5GB"
    model.config.save_pretrained(directory)  # from_pretrained needs the config beside the weights
    if how == "sync":
        serialization.save_torch_state_dict(model.state_dict(), directory, max_shard_size=size)
    else:
        with quicksave.Checkpointer(pinned_budget_bytes="32MB", chunk_bytes=1 << 16) as ckpt:
            handle = ckpt.save_async(model.state_dict(), directory, max_shard_size=size)
            handle.committed().result()
    files = sorted(os.listdir(directory))
    if sharded:
        assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 2, files
    else:
        assert "model.safetensors" in files and "model.safetensors.index.json" not in files, files


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("how", ["sync", "async"])
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_from_pretrained_loads_quicksave_checkpoints(tmp_path, kind, how, sharded):
    model = build(kind)
    save_with_quicksave(model, tmp_path / "ckpt", how, sharded)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    if kind == "gpt2":  # the tie survives: one tensor, not two equal copies
        assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    assert_same_model(model, loaded)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_quicksave_loads_save_pretrained_shards(tmp_path, kind):
    model = build(kind, seed=3)
    model.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    with open(tmp_path / "hf" / "model.safetensors.index.json", encoding="utf-8") as f:
        assert len(set(json.load(f)["weight_map"].values())) > 2
    fresh = build(kind, seed=4)
    result = serialization.load_torch_model(fresh, tmp_path / "hf", strict=False)
    # transformers drops the tied lm_head.weight from its files; the tie restores it.
    assert result.unexpected_keys == []
    assert result.missing_keys == (["lm_head.weight"] if kind == "gpt2" else [])
    assert_same_model(model, fresh)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_quicksave_loads_a_pytorch_model_bin(tmp_path, kind):
    model = build(kind, seed=5)
    (tmp_path / "bin").mkdir()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    fresh = build(kind, seed=6)
    result = serialization.load_torch_model(fresh, tmp_path / "bin", strict=True, safe=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert_same_model(model, fresh)
