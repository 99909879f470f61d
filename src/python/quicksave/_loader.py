"""quicksave.Loader: asynchronous loads of safetensors checkpoints through quicksave's load engine
(parallel reads straight into the tensors' memory, io_uring or pread threads; optional on-the-fly
verification against the checksum manifest). The Hugging Face loaders (load_torch_model,
load_state_dict_from_file) use the same engine synchronously."""
import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

import torch

from . import _quicksave as _C


class LoadFuture:
    """A load in flight. result() waits (with the GIL released) and returns the state dict; it raises
    the load's error (quicksave.CorruptError for a checksum mismatch or a truncated file)."""

    def __init__(self, job):
        self._job = job

    def done(self) -> bool:
        return self._job.ready()

    def result(self, timeout: Optional[float] = None) -> Dict[str, "torch.Tensor"]:
        if not self._job.wait(timeout):
            raise TimeoutError(f"the load did not finish within {timeout} s")
        return self._job.tensors()

    def progress(self) -> Tuple[int, int, int]:
        """(bytes read, bytes to read, bytes verified) so far."""
        return self._job.progress()


class Loader:
    """Loads with quicksave's engine (the process-wide one, configured by QUICKSAVE_LOAD_* variables:
    backend, queue depth, read size, O_DIRECT, workers)."""

    def load_async(
        self,
        path: Union[str, os.PathLike],
        into: Optional[Dict[str, "torch.Tensor"]] = None,
        *,
        keys: Optional[Iterable[str]] = None,
        filename_pattern: Optional[str] = None,
        verify: bool = False,
    ) -> LoadFuture:
        """Starts loading a checkpoint folder (sharded or single file) or one .safetensors file.

        `into`: tensors to fill in place (e.g. model.state_dict()); each that matches the checkpoint
        exactly (CPU, contiguous, same dtype and shape) is read into directly and is itself the value
        in the result; the others, and every tensor not in `into`, come back as new CPU tensors.
        `keys`: load only these names (only their bytes are read). `verify`: require the checksum
        manifest and hash every byte read. Returns once the reads are under way; the files are located
        and every header is validated first, on this thread (those errors are raised here, the
        reads' own by result())."""
        wanted = None if keys is None else list(dict.fromkeys(keys))
        # With keys, only the shards holding them are opened.
        source = _C._open_checkpoint(os.fsencode(Path(path)), filename_pattern, bool(verify), wanted)
        names = source.names()
        if wanted is not None:
            absent = sorted(set(wanted) - set(names))
            if absent:
                raise _C.NotFoundError(f"the checkpoint has no tensor {absent[0]}" + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""))
        plain = {name: t for name, t in (into or {}).items() if type(t) is torch.Tensor or type(t) is torch.nn.Parameter}
        return LoadFuture(_C._load_tensors_async(source, names, plain, bool(verify)))

    def load(self, path: Union[str, os.PathLike], into: Optional[Dict[str, "torch.Tensor"]] = None, **kwargs) -> Dict[str, "torch.Tensor"]:
        """load_async(...).result()."""
        return self.load_async(path, into, **kwargs).result()
