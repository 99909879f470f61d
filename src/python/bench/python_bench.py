"""python_bench: one state dict saved three ways from Python, in one run.

  1. torch.save(state_dict, file) + fsync                      (the usual Python checkpoint)
  2. quicksave.save_torch_state_dict(state_dict, directory)    (synchronous, durable, published)
  3. quicksave.Checkpointer.save_async while a training loop runs: the loop waits for `staged`
     only before optimizer.step(); `committed` is recorded by a done-callback.

For each it reports the time the training loop was blocked and the time until the checkpoint was
durable, and both as ratios to torch.save (lower is better). The loop's own cost with and without
a save in flight shows what the background work takes from the training threads.

    PYTHONPATH=build/python /usr/bin/python3 src/python/bench/python_bench.py --size-mb 256 --dir /tmp
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

import quicksave


def make_model(size_mb: int, width: int) -> torch.nn.Module:
    layer_bytes = width * (width + 1) * 4
    layers = max(1, round(size_mb * 1e6 / layer_bytes))
    blocks = []
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*blocks)


def state_dict_bytes(state_dict) -> int:
    return sum(t.numel() * t.element_size() for t in state_dict.values())


def torch_save_durable(state_dict, path: str) -> float:
    start = time.perf_counter()
    with open(path, "wb") as f:
        torch.save(state_dict, f)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return time.perf_counter() - start


def quicksave_sync(state_dict, directory: str) -> float:
    start = time.perf_counter()
    quicksave.save_torch_state_dict(state_dict, directory)
    return time.perf_counter() - start


class Loop:
    """A training loop: forward, backward, SGD step on a fixed batch."""

    def __init__(self, model, batch: int, width: int):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
        self.x = torch.randn(batch, width)
        self.y = torch.randn(batch, width)

    def forward_backward(self):
        loss = torch.nn.functional.mse_loss(self.model(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def run(self, steps: int, ckpt=None, directory=None, save_at: int = 0):
        """Runs `steps` steps, starting a save before step `save_at` when ckpt is given; returns
        (loop seconds, seconds blocked by the save, seconds from save start to durable)."""
        blocked = 0.0
        handle = None
        committed_at = []
        start = time.perf_counter()
        for step in range(steps):
            if ckpt is not None and step == save_at:
                t = time.perf_counter()
                save_started = t
                handle = ckpt.save_async(self.model.state_dict(), directory)
                handle.committed().add_done_callback(lambda _: committed_at.append(time.perf_counter()))
                blocked += time.perf_counter() - t
            self.forward_backward()
            if handle is not None and not handle.staged().done():
                t = time.perf_counter()
                handle.staged().result()  # before the optimizer changes the weights
                blocked += time.perf_counter() - t
            self.optimizer.step()
        loop_seconds = time.perf_counter() - start
        durable = None
        if handle is not None:
            handle.committed().result()
            handle._join()  # the done-callback has run
            durable = committed_at[0] - save_started
        return loop_seconds, blocked, durable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=256, help="state dict size (float32 Linear layers)")
    parser.add_argument("--width", type=int, default=1024, help="Linear layer width")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="training steps per measured loop (the save must end within it)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per method (the median is reported)")
    parser.add_argument("--dir", default=None, help="where checkpoints are written (default: a temporary directory)")
    parser.add_argument("--pinned-budget", default="512MB", help="Checkpointer staging budget")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = make_model(args.size_mb, args.width)
    state_dict = model.state_dict()
    nbytes = state_dict_bytes(state_dict)
    root = tempfile.mkdtemp(prefix="quicksave-bench-", dir=args.dir)
    loop = Loop(model, args.batch, args.width)
    try:
        loop.run(2)  # warm-up
        torch_times, sync_times, loop_base, loop_saving, blocked, durable = [], [], [], [], [], []
        with quicksave.Checkpointer(pinned_budget_bytes=args.pinned_budget) as ckpt:
            for i in range(args.repeat):
                torch_times.append(torch_save_durable(state_dict, os.path.join(root, f"torch-{i}.pt")))
                sync_times.append(quicksave_sync(state_dict, os.path.join(root, f"sync-{i}")))
                loop_base.append(loop.run(args.steps)[0])
                seconds, blocked_s, durable_s = loop.run(args.steps, ckpt, os.path.join(root, f"async-{i}"), save_at=1)
                loop_saving.append(seconds)
                blocked.append(blocked_s)
                durable.append(durable_s)
            backend = ckpt.backend_name
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = statistics.median
    t_torch = med(torch_times)
    rows = [
        ("torch.save + fsync", t_torch, t_torch),
        ("quicksave.save_torch_state_dict", med(sync_times), med(sync_times)),
        ("quicksave save_async in the loop", med(blocked), med(durable)),
    ]
    print(f"state dict: {len(state_dict)} tensors, {nbytes / 1e6:.1f} MB; {args.repeat} runs, medians; "
          f"torch threads {torch.get_num_threads()}; quicksave backend {backend}; checkpoints in {args.dir or tempfile.gettempdir()}")
    print(f"{'method':36} {'blocked s':>10} {'durable s':>10} {'blocked/torch':>14} {'durable/torch':>14}")
    for name, blocked_s, durable_s in rows:
        print(f"{name:36} {blocked_s:10.3f} {durable_s:10.3f} {blocked_s / t_torch:14.3f} {durable_s / t_torch:14.3f}")
    print(f"training loop of {args.steps} steps: {med(loop_base):.3f} s alone, {med(loop_saving):.3f} s with a save in flight "
          f"(x{med(loop_saving) / med(loop_base):.2f}); {nbytes / 1e6 / med(durable):.0f} MB/s to durable asynchronously, "
          f"{nbytes / 1e6 / t_torch:.0f} MB/s torch.save")
    return 0


if __name__ == "__main__":
    sys.exit(main())
