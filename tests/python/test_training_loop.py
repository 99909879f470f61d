"""A toy training loop (small torch.nn model, SGD) saves asynchronously every few steps while it
keeps training: it waits only for `staged` before the optimizer changes the weights, never for
`committed`. Every checkpoint must reload to the exact weights of its step."""

import concurrent.futures

import torch

import quicksave


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                                          torch.nn.Tanh(), torch.nn.Linear(64, 4))
        # A buffer too, changed next to the optimizer. (BatchNorm's running stats would change in
        # forward(): a loop with them must wait for `staged` before the forward pass instead.)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        return self.layers(x)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train(ckpt, directory_of, steps=24, every=3, max_shard_size="8KB"):
    torch.manual_seed(0)
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = torch.randn(16, 32)
    target = torch.randn(16, 4)
    saves = []  # (step, handle, weights at that step)
    pending = None
    for step in range(1, steps + 1):
        loss = torch.nn.functional.mse_loss(model(data), target)
        optimizer.zero_grad()
        loss.backward()
        if pending is not None:
            pending.staged().result()  # the weights may change only once every byte is copied out
            pending = None
        optimizer.step()
        model.step += 1
        if step % every == 0:
            expected = snapshot(model)
            pending = ckpt.save_async(model.state_dict(), directory_of(step), max_shard_size=max_shard_size,
                                      metadata={"step": str(step)})
            saves.append((step, pending, expected))
    return saves


def expect_reloads_exactly(directory, expected):
    fresh = Toy()
    result = quicksave.load_torch_model(fresh, directory, strict=True)
    assert repr(result) == "<All keys matched successfully>"
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_async_saves_while_training_reload_to_their_step(tmp_path):
    with quicksave.Checkpointer(pinned_budget_bytes="1MB", chunk_bytes=4096 * 4) as ckpt:
        saves = train(ckpt, lambda step: tmp_path / f"step-{step}")
        results = [handle.committed().result() for _, handle, _ in saves]
    assert len(saves) == 8
    for (step, handle, expected), result in zip(saves, results):
        assert isinstance(result, quicksave.SaveResult)
        assert result.files[-1] == "model.safetensors.index.json"  # sharded at 8KB
        progress = handle.progress()
        assert progress.bytes_staged == progress.bytes_written == progress.bytes_total > 0
        expect_reloads_exactly(tmp_path / f"step-{step}", expected)
        assert quicksave.load_state_dict_from_file(tmp_path / f"step-{step}" / result.files[0]) is not None
    # consecutive checkpoints differ: the loop really trained between saves
    assert not torch.equal(saves[0][2]["layers.0.weight"], saves[1][2]["layers.0.weight"])


def test_async_saves_into_one_directory_keep_the_latest(tmp_path):
    with quicksave.Checkpointer(max_in_flight_saves=1) as ckpt:
        saves = train(ckpt, lambda step: tmp_path / "latest", steps=12, every=2, max_shard_size="5GB")
        done, _ = concurrent.futures.wait([handle.committed() for _, handle, _ in saves])
    assert all(f.exception() is None for f in done)
    # saves to one directory run in submission order; each replaces the previous atomically
    expect_reloads_exactly(tmp_path / "latest", saves[-1][2])
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == [
        "model.safetensors",
        "model.safetensors.quicksave-manifest.json",
    ]


def test_state_dict_tensors_stay_alive_while_the_save_reads_them(tmp_path):
    with quicksave.Checkpointer(pinned_budget_bytes="64KB", chunk_bytes=4096) as ckpt:
        expected = {f"t{i}": torch.full((1000,), float(i)) for i in range(50)}
        # the only references to these tensors are the engine's once this call returns
        handle = ckpt.save_async({k: v.clone() for k, v in expected.items()}, tmp_path / "c", max_shard_size="16KB")
        handle.committed().result()
    loaded = {}
    for shard in sorted((tmp_path / "c").glob("*.safetensors")):
        loaded.update(quicksave.load_state_dict_from_file(shard))
    assert sorted(loaded) == sorted(expected)
    for name, value in expected.items():
        assert torch.equal(loaded[name], value), name
