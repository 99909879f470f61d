"""The GIL is released while quicksave's C++ core works: another Python thread keeps running
during a synchronous save and a load.

Each check counts how often a pure-Python thread gets to run while the main thread is inside one
quicksave call. Were the GIL held for the whole call, that thread could not run at all and the
count would be exactly 0; no timing is asserted."""
import threading

import torch

import quicksave


class Counter(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.count = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.count += 1


def count_while(call):
    counter = Counter()
    counter.start()
    while counter.count == 0:  # it runs before the call starts
        pass
    before = counter.count
    result = call()
    during = counter.count - before
    counter.stop.set()
    counter.join()
    return during, result


def big_state_dict():
    torch.manual_seed(0)
    return {f"layer{i}.weight": torch.randn(2048, 2048) for i in range(24)}  # 400 MB


def test_synchronous_save_and_load_release_the_gil(tmp_path):
    state_dict = big_state_dict()
    during_save, _ = count_while(lambda: quicksave.save_torch_state_dict(state_dict, str(tmp_path / "c")))
    assert during_save > 0
    during_load, loaded = count_while(
        lambda: quicksave.load_state_dict_from_file(str(tmp_path / "c" / "model.safetensors"), mmap=False))
    assert during_load > 0
    assert torch.equal(loaded["layer3.weight"], state_dict["layer3.weight"])
