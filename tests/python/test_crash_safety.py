"""Crash safety through the Python module: loads of a crashed folder read its last complete
checkpoint without writing, a verifying load finds a flipped bit and names it, and a second writer
into a folder another save holds gets quicksave.BusyError."""
import fcntl
import os
from pathlib import Path

import pytest
import torch

import quicksave
from quicksave import serialization


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))


def _snapshot(root: Path):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _flip_bit(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_a_verifying_load_finds_a_flipped_bit_and_names_the_tensor(tmp_path):
    model = _model(1)
    serialization.save_torch_model(model, tmp_path, max_shard_size="10KB")
    manifest = tmp_path / "model.safetensors.quicksave-manifest.json"
    assert manifest.is_file()
    target = _model(2)
    serialization.load_torch_model(target, tmp_path, strict=True, verify=True)
    for a, b in zip(model.state_dict().values(), target.state_dict().values()):
        assert torch.equal(a, b)

    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    _flip_bit(shard, shard.stat().st_size - 3)  # inside the last tensor's bytes
    with pytest.raises(quicksave.CorruptError) as info:
        serialization.load_torch_model(_model(3), tmp_path, verify=True)
    message = str(info.value)
    assert shard.name in message and "bytes [" in message and "do not match the manifest" in message
    # Without verify the load still goes through (the bytes are well formed), as before.
    serialization.load_torch_model(_model(3), tmp_path)


def test_a_folder_without_a_manifest_cannot_be_verified(tmp_path):
    serialization.save_torch_model(_model(1), tmp_path)
    (tmp_path / "model.safetensors.quicksave-manifest.json").unlink()
    serialization.load_torch_model(_model(2), tmp_path)  # loads as any Hugging Face folder
    with pytest.raises(quicksave.NotFoundError):
        serialization.load_torch_model(_model(2), tmp_path, verify=True)


def test_loading_a_folder_with_an_interrupted_switch_changes_nothing(tmp_path):
    model = _model(1)
    serialization.save_torch_model(model, tmp_path, max_shard_size="10KB")
    (tmp_path / "config.json").write_text("{}")
    # A switch that wrote its journal, renamed the new index into place and died before its
    # commit mark: the index is new, the journal says the previous one is the backup.
    tag = ".qs-00000000c0ffee00"
    index = tmp_path / "model.safetensors.index.json"
    backup = tmp_path / f"{tag}.old.model.safetensors.index.json"
    os.link(index, backup)
    new_index = tmp_path / "new-index"
    new_index.write_text('{"metadata": {"total_size": 0}, "weight_map": {"missing.weight": "model-00009-of-00009.safetensors"}}')
    os.rename(new_index, index)
    journal = (
        "quicksave-journal 2\n"
        f"tag\t{tag}\n"
        "pattern\tmodel{suffix}.safetensors\n"
        "writer\thost=h boot=b pid=1\n"
        f"rename\tmodel.safetensors.index.json\t1\t{index.stat().st_ino}\n"
        "end\t1\n"
    )
    (tmp_path / f"{tag}.journal").write_text(journal)
    before = _snapshot(tmp_path)
    target = _model(2)
    serialization.load_torch_model(target, tmp_path, strict=True)  # reads the previous, complete index
    for a, b in zip(model.state_dict().values(), target.state_dict().values()):
        assert torch.equal(a, b)
    assert _snapshot(tmp_path) == before, "a load changed the folder"
    # Recovery (a writer's job) then leaves exactly what the load read.
    actions = quicksave._quicksave._recover_checkpoint(str(tmp_path))
    assert any("rolled back" in a for a in actions), actions
    assert not backup.exists() and not (tmp_path / f"{tag}.journal").exists()
    target = _model(3)
    serialization.load_torch_model(target, tmp_path, strict=True)
    for a, b in zip(model.state_dict().values(), target.state_dict().values()):
        assert torch.equal(a, b)


def test_a_second_writer_gets_busy_error_naming_the_holder(tmp_path):
    folder = tmp_path / "ckpt"
    serialization.save_torch_model(_model(1), folder)
    # Hold the folder's writer lock the way a running save would (a classic fcntl lock conflicts
    # with the lock quicksave takes).
    with open(tmp_path / ".ckpt.quicksave-lock", "w") as lock:
        lock.write("tag=.qs-0123456789abcdef host=python-test pid=42")
        lock.flush()
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(quicksave.BusyError) as info:
            serialization.save_torch_model(_model(2), folder)
        assert "host=python-test" in str(info.value)
        assert isinstance(info.value, BlockingIOError)
    serialization.save_torch_model(_model(2), folder)  # free again


def test_verify_checkpoint_reports_a_valid_checkpoint_then_names_a_flipped_bit(tmp_path):
    model = _model(3)
    serialization.save_torch_model(model, tmp_path, max_shard_size="10KB")
    before = _snapshot(tmp_path)
    report = quicksave.verify_checkpoint(tmp_path)
    assert report and report.valid, report.problems
    assert report.kind == "sharded" and report.index == "model.safetensors.index.json"
    assert report.manifest_found and report.checksummed_tensors == len(model.state_dict())
    assert all(f.status == "ok" and f.xxh64 is not None for f in report.files)
    assert report.bytes_read == sum((tmp_path / f.name).stat().st_size for f in report.files)

    shard = tmp_path / report.files[0].name
    _flip_bit(shard, shard.stat().st_size - 1)
    broken = quicksave.verify_checkpoint(str(shard.parent))
    assert not broken and not broken.valid
    assert any(report.files[0].name in p and "checksum" in p for p in broken.problems), broken.problems
    # Verifying changes nothing but the one bit flipped above.
    after = _snapshot(tmp_path)
    assert after.keys() == before.keys()


def test_verify_checkpoint_of_an_empty_folder_is_a_report_not_an_exception(tmp_path):
    report = quicksave.verify_checkpoint(tmp_path)
    assert not report.valid and report.kind == "none"
    assert "no safetensors checkpoint" in report.problems[0]
