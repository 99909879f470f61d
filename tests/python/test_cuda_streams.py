"""The producer stream from Python: Checkpointer.save_async copies CUDA tensors after the work
queued on each device's current stream, or on the torch.cuda.Stream passed as `stream`. torch's
side streams are non-blocking (the legacy default stream does not wait for them), so a save that
waited on the wrong stream would copy the zeros, not the values written after a long sleep
kernel. The device tests skip without a GPU; the argument checks run everywhere."""

import pytest
import torch

import quicksave

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_stream_must_be_a_cuda_stream(tmp_path):
    with quicksave.Checkpointer(pinned_budget_bytes="16MB") as ckpt:
        with pytest.raises(quicksave.InvalidArgumentError, match="torch.cuda.Stream"):
            ckpt.save_async({"w": torch.ones(2)}, tmp_path / "a", stream="default")
        with pytest.raises(quicksave.InvalidArgumentError, match="torch.cuda.Stream"):
            ckpt.save_async({"w": torch.ones(2)}, tmp_path / "b", stream=[object()])


def _filled_late(stream: "torch.cuda.Stream", value: float) -> torch.Tensor:
    weights = torch.zeros(1 << 20, device="cuda")
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time queued before the fill
        weights.fill_(value)
    return weights


@needs_gpu
def test_save_async_waits_on_the_current_stream(tmp_path):
    side = torch.cuda.Stream()
    with quicksave.Checkpointer(pinned_budget_bytes="64MB") as ckpt:
        with torch.cuda.stream(side):  # the training loop's current stream
            weights = _filled_late(side, 7.0)
            handle = ckpt.save_async({"w": weights}, tmp_path / "ckpt")  # no synchronize
        handle.committed().result()
    loaded = quicksave.serialization.load_state_dict_from_file(tmp_path / "ckpt" / "model.safetensors")
    assert torch.all(loaded["w"] == 7.0)


@needs_gpu
def test_stream_argument_names_the_producer(tmp_path):
    side = torch.cuda.Stream()
    weights = _filled_late(side, 5.0)  # the current stream stays the default one
    with quicksave.Checkpointer(pinned_budget_bytes="64MB") as ckpt:
        ckpt.save_async({"w": weights}, tmp_path / "ckpt", stream=side).committed().result()
    loaded = quicksave.serialization.load_state_dict_from_file(tmp_path / "ckpt" / "model.safetensors")
    assert torch.all(loaded["w"] == 5.0)
