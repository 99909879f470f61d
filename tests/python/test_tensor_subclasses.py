"""Tensors without data of their own (DTensor, other __torch_dispatch__ wrapper subclasses) given
to a single-process save: refused with an error that says what to do, never "has no data
pointer", by the synchronous save and by Checkpointer.save_async; the remedy the message names
(full_tensor()) then saves. DTensor needs torch >= 2.4 (the wheel line): a one-process gloo group
on CPU builds one; the Debian line (torch 1.13) runs the plain-subclass case only."""

import socket

import pytest
import torch

import quicksave
from quicksave import serialization


class _Wrapper(torch.Tensor):
    """The smallest __torch_dispatch__ wrapper subclass: a storage without data, like DTensor's."""

    @staticmethod
    def __new__(cls, inner):
        return torch.Tensor._make_wrapper_subclass(cls, inner.shape, dtype=inner.dtype, device=inner.device)

    def __init__(self, inner):
        self.inner = inner

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        unwrap = lambda t: t.inner if isinstance(t, _Wrapper) else t  # noqa: E731
        return func(*[unwrap(a) for a in args], **{k: unwrap(v) for k, v in (kwargs or {}).items()})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mesh():
    tensor_api = pytest.importorskip("torch.distributed.tensor", reason="DTensor needs torch >= 2.4 (the wheel line)")
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        yield tensor_api, init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def _saves(tmp_path):
    """Each way to save one state dict in a single process."""

    def sync(state_dict, name):
        return serialization.save_torch_state_dict(state_dict, tmp_path / name)

    def async_(state_dict, name):
        with quicksave.Checkpointer(pinned_budget_bytes="16MB") as ckpt:
            return ckpt.save_async(state_dict, str(tmp_path / name)).committed().result()

    return {"sync": sync, "async": async_}


@pytest.mark.parametrize("how", ["sync", "async"])
def test_dtensor_is_refused_with_the_remedy(mesh, tmp_path, how):
    tensor_api, device_mesh = mesh
    weight = tensor_api.distribute_tensor(torch.arange(12.0).reshape(3, 4), device_mesh, [tensor_api.Shard(0)])
    save = _saves(tmp_path)[how]
    with pytest.raises(quicksave.InvalidArgumentError) as raised:
        save({"plain": torch.ones(2), "layer.weight": weight}, "refused")
    message = str(raised.value)
    assert "DTensor" in message and "'layer.weight'" in message and "full_tensor()" in message, message
    assert "Shard(dim=0)" in message, message  # the placements say why it is not a plain tensor
    assert "data pointer" not in message
    assert not (tmp_path / "refused" / "model.safetensors").exists()

    # The remedy the message names works.
    save({"plain": torch.ones(2), "layer.weight": weight.full_tensor()}, "full")
    loaded = serialization.load_state_dict_from_file(tmp_path / "full" / "model.safetensors")
    assert torch.equal(loaded["layer.weight"], torch.arange(12.0).reshape(3, 4))


@pytest.mark.parametrize("how", ["sync", "async"])
def test_wrapper_subclass_is_refused_by_name(tmp_path, how):
    wrapped = _Wrapper(torch.arange(4.0))
    with pytest.raises(quicksave.InvalidArgumentError) as raised:
        _saves(tmp_path)[how]({"w": wrapped}, "refused")
    message = str(raised.value)
    assert "'w'" in message and "_Wrapper" in message and "plain torch.Tensor" in message, message
    assert "data pointer" not in message
