"""The Hugging Face serialization API (huggingface_hub.serialization) over quicksave's C++ core.

Same names, signatures, defaults and messages as the reference. Where the reference silently
loses data or crashes, quicksave does the safe thing instead (see quicksave/torch.hpp):
  - only names that are the same view are de-duplicated; other views are saved with their own bytes;
  - every dtype safetensors knows is saved (complex64, ...);
  - a filename pattern without {suffix} that needs several shards is refused;
  - stale-file clean-up removes only the pattern's exact shard/index names, after the new files
    are durable, and the save directory is created when missing;
  - the caller's state dict and metadata are never modified;
  - load_torch_model(strict=True) works on sharded checkpoints;
  - a value that is not a tensor (a bnb string) is refused with a clear error.
"""

import dataclasses
import logging
import operator
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch

from . import _quicksave as _C

logger = logging.getLogger("quicksave")

MAX_SHARD_SIZE = "5GB"
SAFETENSORS_WEIGHTS_FILE_PATTERN = "model{suffix}.safetensors"
PYTORCH_WEIGHTS_FILE_PATTERN = "pytorch_model{suffix}.bin"
SAFETENSORS_SINGLE_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"

_UNSAFE_WARNING = (
    "You are using unsafe serialization. Due to security reasons, it is recommended not to load pickled models from "
    "untrusted sources. If you intend to share your model, we strongly recommend using safe serialization by "
    "installing `safetensors` with `pip install safetensors`."
)

parse_size_to_int = _C.parse_size_to_int
get_torch_storage_size = _C.get_torch_storage_size


@dataclasses.dataclass
class StateDictSplit:
    """How a state dict is split into files: `filename_to_tensors` and `tensor_to_filename` keep
    the order the index is written in; `is_sharded` is True when there is more than one file."""

    is_sharded: bool = dataclasses.field(init=False)
    metadata: Dict[str, Any]
    filename_to_tensors: Dict[str, List[str]]
    tensor_to_filename: Dict[str, str]

    def __post_init__(self):
        self.is_sharded = len(self.filename_to_tensors) > 1


def get_torch_storage_id(tensor: "torch.Tensor"):
    """(device, storage address, storage bytes): equal for tensors that view the same storage;
    None for meta tensors, which are never grouped."""
    ident = _C._storage_id(tensor)
    if ident is None:
        return None
    return (tensor.device, ident[0], ident[1])


def _max_shard_size_arg(max_shard_size):
    """An int-like (numpy integer, ...) as an int; anything else as given (C++ refuses it clearly)."""
    if isinstance(max_shard_size, (str, int, float)):
        return max_shard_size
    try:
        return operator.index(max_shard_size)
    except TypeError:
        return max_shard_size


def _native_path(path) -> bytes:
    """A path as the bytes the OS uses (names that are not UTF-8 included) for the C++ side."""
    return os.fsencode(path)


def split_state_dict_into_shards_factory(
    state_dict: Dict[str, Any],
    *,
    get_storage_size: Callable[[Any], int],
    filename_pattern: str,
    get_storage_id: Callable[[Any], Optional[Any]] = lambda tensor: None,
    max_shard_size: Union[int, str] = MAX_SHARD_SIZE,
) -> StateDictSplit:
    """Splits a state dict into shards of at most `max_shard_size` (greedy, in key order; an
    oversized tensor gets its own shard; tensors of one storage go to the first one's shard).

    Only the first tensor of a storage is sized; string values (bnb serialization) are skipped.
    Raises ValueError for a bad size or pattern, including a pattern without `{suffix}` that
    would need several shards (the reference silently gives them all one name)."""
    groups: Dict[Any, int] = {}
    items = []
    for key, tensor in state_dict.items():
        if isinstance(tensor, str):
            logger.info("Skipping tensor %s as it is a string (bnb serialization)", key)
            items.append((key, True, 0, None))
            continue
        storage_id = get_storage_id(tensor)
        group = None
        if storage_id is not None:
            if storage_id in groups:
                items.append((key, False, 0, groups[storage_id]))  # neither sized nor placed now
                continue
            group = groups[storage_id] = len(groups)
        items.append((key, False, int(get_storage_size(tensor)), group))
    metadata, files, tensors = _C._split_items(items, filename_pattern, _max_shard_size_arg(max_shard_size))
    return StateDictSplit(
        metadata=metadata,
        filename_to_tensors={file: list(names) for file, names in files},
        tensor_to_filename=dict(tensors),
    )


def split_torch_state_dict_into_shards(
    state_dict: Dict[str, "torch.Tensor"],
    *,
    filename_pattern: str = SAFETENSORS_WEIGHTS_FILE_PATTERN,
    max_shard_size: Union[int, str] = MAX_SHARD_SIZE,
) -> StateDictSplit:
    """split_state_dict_into_shards_factory with torch storage sizes and ids: views of one storage
    count once (their whole storage) and are placed together."""
    return split_state_dict_into_shards_factory(
        state_dict,
        max_shard_size=max_shard_size,
        filename_pattern=filename_pattern,
        get_storage_size=get_torch_storage_size,
        get_storage_id=get_torch_storage_id,
    )


def _save_args(filename_pattern, force_contiguous, max_shard_size, metadata, is_main_process, shared_tensors_to_discard):
    return _C._save_args(
        filename_pattern,
        bool(force_contiguous),
        _max_shard_size_arg(max_shard_size),
        metadata,
        bool(is_main_process),
        None if shared_tensors_to_discard is None else list(shared_tensors_to_discard),
    )


def save_torch_state_dict(
    state_dict: Dict[str, "torch.Tensor"],
    save_directory: Union[str, Path],
    *,
    filename_pattern: Optional[str] = None,
    force_contiguous: bool = True,
    max_shard_size: Union[int, str] = MAX_SHARD_SIZE,
    metadata: Optional[Dict[str, Any]] = None,
    safe_serialization: bool = True,
    is_main_process: bool = True,
    shared_tensors_to_discard: Optional[List[str]] = None,
):
    """Saves a state dict as safetensors shards (or torch.save .bin files with
    safe_serialization=False) plus an index when sharded, published atomically: the previous
    checkpoint in `save_directory` stays loadable until the new one is durable.

    Returns a SaveResult (files, bytes_written, commit_mode, removed_stale, backend); the
    reference returns None."""
    save_directory = str(save_directory)
    if not safe_serialization:
        logger.warning(_UNSAFE_WARNING)
    args = _save_args(filename_pattern, force_contiguous, max_shard_size, metadata, is_main_process, shared_tensors_to_discard)
    result = _C._save_torch_state_dict(state_dict, _native_path(save_directory), args, bool(safe_serialization))
    logger.info("Model weights successfully saved to %s!", save_directory)
    return result


def save_torch_model(
    model: "torch.nn.Module",
    save_directory: Union[str, Path],
    *,
    filename_pattern: Optional[str] = None,
    force_contiguous: bool = True,
    max_shard_size: Union[int, str] = MAX_SHARD_SIZE,
    metadata: Optional[Dict[str, Any]] = None,
    safe_serialization: bool = True,
    is_main_process: bool = True,
    shared_tensors_to_discard: Optional[List[str]] = None,
):
    """save_torch_state_dict(model.state_dict(), ...)."""
    return save_torch_state_dict(
        state_dict=model.state_dict(),
        save_directory=save_directory,
        filename_pattern=filename_pattern,
        force_contiguous=force_contiguous,
        max_shard_size=max_shard_size,
        metadata=metadata,
        safe_serialization=safe_serialization,
        is_main_process=is_main_process,
        shared_tensors_to_discard=shared_tensors_to_discard,
    )


def _device_name(map_location) -> Optional[str]:
    if map_location is None:
        return None
    if isinstance(map_location, torch.device):
        return str(map_location)
    if isinstance(map_location, str):
        return map_location
    raise _C.InvalidArgumentError(
        f"map_location must be a str or torch.device to load a safetensors file, got {type(map_location).__name__}"
    )


def load_state_dict_from_file(
    checkpoint_file: Union[str, os.PathLike],
    map_location: Optional[Union[str, "torch.device"]] = None,
    weights_only: bool = False,
    mmap: bool = False,
    *,
    allow_unsafe_pickle: bool = False,
) -> Union[Dict[str, "torch.Tensor"], Any]:
    """Loads one checkpoint file: a safetensors file through quicksave's validating reader (every
    header rule checked; with mmap=True the tensors view a private mapping of the file); any other
    file (a torch.save `.bin` archive) through quicksave's own reader, which reads state dicts of
    tensors and refuses anything else, so a checkpoint cannot run code (`weights_only` is then
    moot: nothing but tensors is ever loaded).

    allow_unsafe_pickle=True hands non-safetensors files to torch.load(weights_only=weights_only)
    instead (map_location and, where torch has it, mmap forwarded): with weights_only=False that
    runs any code the file contains. Use it only for files you trust that quicksave's reader
    refuses (the legacy pre-1.6 format, pickles of objects other than tensors)."""
    checkpoint_path = Path(checkpoint_file)
    if not checkpoint_path.is_file():
        raise _C.NotFoundError(
            f"No checkpoint file found at '{checkpoint_path}'. Please verify the path is correct and the file has been "
            "properly downloaded."
        )
    if checkpoint_path.suffix == ".safetensors":
        device = _device_name(map_location)
        if device is not None and torch.device(device).type == "meta":
            logger.warning("Meta device is not supported with safetensors. Falling back to CPU device.")
            device = "cpu"
        return _C._load_safetensors(_native_path(checkpoint_path), device, bool(mmap))
    if not allow_unsafe_pickle:
        device = _device_name(map_location)
        if device is not None and torch.device(device).type == "meta":
            device = "cpu"
        return _C._load_safetensors(_native_path(checkpoint_path), device, bool(mmap))
    kwargs: Dict[str, Any] = {"map_location": map_location, "weights_only": weights_only}
    if _TORCH_LOAD_HAS_MMAP:
        kwargs["mmap"] = mmap
    return torch.load(checkpoint_path, **kwargs)


def _torch_load_has_mmap() -> bool:
    import inspect

    return "mmap" in inspect.signature(torch.load).parameters


_TORCH_LOAD_HAS_MMAP = _torch_load_has_mmap()


def _strict_keys_message(model, missing: List[str], unexpected: List[str]) -> str:
    message = f"Error(s) in loading state_dict for {model.__class__.__name__}"
    if missing:
        message += "\nMissing key(s): " + ",".join(f'"{k}"' for k in missing) + "."
    if unexpected:
        message += "\nUnexpected key(s): " + ",".join(f'"{k}"' for k in unexpected) + "."
    return message


def _verify_checksums(directory: Path, pattern: str) -> None:
    found, mismatches = _C._verify_checksums(_native_path(directory), pattern)
    if not found:
        raise _C.NotFoundError(f"verify: {directory} has no quicksave checksum manifest")
    if mismatches:
        more = f" (and {len(mismatches) - 1} more mismatches)" if len(mismatches) > 1 else ""
        raise _C.CorruptError(f"verify: {mismatches[0]}{more}")


class _FolderView:
    """The complete checkpoint in a folder as quicksave's loaders read it (quicksave::checkpoint_folder_view):
    leftovers of an interrupted save are never touched, the journal says which files to read (which files
    belong to the checkpoint is quicksave::locate_checkpoint's, through the same view)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.redirected, _hidden, notes = _C._checkpoint_view(_native_path(directory))
        for note in notes:
            logger.info("%s: %s", directory, note)

    def path(self, name: str) -> Path:
        return self.directory / self.redirected.get(name, name)


def _loads_plainly(model) -> bool:
    """True when loading `model` is only copying values into its parameters and buffers: an
    nn.Module whose load_state_dict is torch's, where no module overrides _load_from_state_dict and
    none has a load_state_dict pre-hook, which could rename, skip or transform what the checkpoint
    holds. Only then may the engine read straight into them and skip the keys the model lacks."""
    if not isinstance(model, torch.nn.Module) or type(model).load_state_dict is not torch.nn.Module.load_state_dict:
        return False
    plain = torch.nn.Module._load_from_state_dict
    for module in model.modules():
        if type(module)._load_from_state_dict is not plain:
            return False
        if getattr(module, "_load_state_dict_pre_hooks", None):
            return False
    return True


def _load_with_engine(model, path: Path, filename_pattern: Optional[str], sharded: bool, strict: bool, verify: bool):
    """load_torch_model for safetensors (not mapped): quicksave's load engine reads every tensor the
    model has, in parallel, straight into its parameters and buffers where they match exactly (CPU,
    contiguous, same dtype and shape; only for models that load plainly), else into tensors
    allocated once; model.load_state_dict then does the rest (casts, devices, the reference's
    checks and messages; a straight read's entry is the parameter's own memory, which copy_
    skips). Keys a plain module lacks are never read. verify hashes each range as it arrives."""
    source = _C._open_checkpoint(_native_path(path), filename_pattern, bool(verify))
    names = sorted(source.names())
    model_state = model.state_dict()
    missing = sorted(set(model_state) - set(names))
    unexpected = [name for name in names if name not in model_state]
    if sharded and strict and (missing or unexpected):
        raise RuntimeError(_strict_keys_message(model, missing, unexpected))
    plain = _loads_plainly(model)
    into = {name: tensor for name, tensor in model_state.items() if type(tensor) is torch.Tensor} if plain else {}
    # A plain module ignores the values of keys it lacks, so they are not read; any other model
    # (its own load_state_dict, hooks, a duck-typed object) gets every tensor, as the reference gives it.
    job = _C._load_tensors_async(source, [name for name in names if name in model_state or not plain], into, bool(verify))
    job.wait()
    loaded = job.tensors()
    # The checkpoint's key order (sorted, as safetensors gives it).
    state_dict = {name: loaded[name] if name in loaded else torch.empty(0) for name in names}
    if not sharded:
        return model.load_state_dict(state_dict, strict=strict)
    model.load_state_dict(state_dict, strict=False)
    return torch.nn.modules.module._IncompatibleKeys(missing_keys=missing, unexpected_keys=unexpected)


def _load_sharded(
    model, directory: "_FolderView", index_file: Path, pattern: str, strict, weights_only, map_location, mmap, allow_unsafe_pickle
):
    _, weight_map = _C._read_index(_native_path(index_file))
    shards: List[str] = []
    for _, shard in weight_map:
        if shard not in shards:
            _C._validate_shard_filename(shard, pattern, _native_path(index_file))
            shards.append(shard)
    index_keys = {name for name, _ in weight_map}
    model_keys = set(model.state_dict().keys())
    missing = sorted(model_keys - index_keys)
    unexpected = sorted(index_keys - model_keys)
    if strict and (missing or unexpected):
        raise RuntimeError(_strict_keys_message(model, missing, unexpected))
    names_in: Dict[str, List[str]] = {}
    for name, shard in weight_map:
        names_in.setdefault(shard, []).append(name)
    for shard in shards:
        state_dict = load_state_dict_from_file(
            directory.path(shard),
            map_location=map_location,
            weights_only=weights_only,
            mmap=mmap,
            allow_unsafe_pickle=allow_unsafe_pickle,
        )
        # Every index entry must be in its shard, strict or not: otherwise that parameter would
        # keep its old values while the load reports success.
        for name in names_in[shard]:
            if name not in state_dict:
                raise _C.CorruptError(f"the index maps {name} to {shard}, which does not hold it")
        # Each shard holds part of the keys: loaded non-strictly, the whole was checked above
        # (the reference loads each shard strictly, so strict=True always fails on several shards).
        model.load_state_dict(state_dict, strict=False)
        del state_dict
    return torch.nn.modules.module._IncompatibleKeys(missing_keys=missing, unexpected_keys=unexpected)


def load_torch_model(
    model: "torch.nn.Module",
    checkpoint_path: Union[str, os.PathLike],
    *,
    strict: bool = False,
    safe: bool = True,
    weights_only: bool = False,
    map_location: Optional[Union[str, "torch.device"]] = None,
    mmap: bool = False,
    filename_pattern: Optional[str] = None,
    verify: bool = False,
    allow_unsafe_pickle: bool = False,
):
    """Loads a checkpoint file, or a directory holding a sharded checkpoint (with its index) or a
    single model file, into `model` with its own load_state_dict. Returns the incompatible keys
    (sorted). A directory interrupted by a crash mid-save is read as its last complete checkpoint,
    without changing it (recovery is for writers and `quicksave recover`). With verify=True every
    tensor's bytes are first checked against the checksum manifest quicksave writes with each save
    (quicksave.CorruptError names the file, tensor and byte range of a mismatch).
    `.bin` files (safe=False) are read by quicksave's own reader, never unpickled with code;
    allow_unsafe_pickle=True uses torch.load instead (see load_state_dict_from_file)."""
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.exists():
        raise _C.InvalidArgumentError(f"Checkpoint path {checkpoint_path} does not exist")
    if checkpoint_path.is_file() and checkpoint_path.suffix == ".safetensors" and not mmap:
        _device_name(map_location)  # checked as before; the model's own devices decide where values go
        return _load_with_engine(model, checkpoint_path, None, False, strict, verify)
    if checkpoint_path.is_file():
        if verify:
            _verify_checksums(checkpoint_path.parent, SAFETENSORS_WEIGHTS_FILE_PATTERN)
        state_dict = load_state_dict_from_file(
            checkpoint_path,
            map_location=map_location,
            weights_only=weights_only,
            mmap=mmap,
            allow_unsafe_pickle=allow_unsafe_pickle,
        )
        return model.load_state_dict(state_dict, strict=strict)

    # Loads never write: a folder an interrupted save left leftovers in is read as the complete
    # checkpoint its journal describes (the C++ loaders use the same view), and left as it is.
    # Which files: quicksave::locate_checkpoint, the reference's rules (one implementation for C++
    # and Python); the reference raises ValueError where nothing matches.
    try:
        index_file, single_file, filename_pattern = _C._locate_checkpoint(
            _native_path(checkpoint_path), bool(safe), filename_pattern
        )
    except _C.NotFoundError as error:
        raise _C.InvalidArgumentError(str(error)) from None
    if not mmap and Path(os.fsdecode(single_file) if single_file is not None else filename_pattern).suffix == ".safetensors":
        _device_name(map_location)
        return _load_with_engine(model, checkpoint_path, filename_pattern, index_file is not None, strict, verify)
    if verify:
        _verify_checksums(checkpoint_path, filename_pattern)
    if index_file is not None:
        return _load_sharded(
            model,
            _FolderView(checkpoint_path),
            Path(os.fsdecode(index_file)),
            filename_pattern,
            strict,
            weights_only,
            map_location,
            mmap,
            allow_unsafe_pickle,
        )
    state_dict = load_state_dict_from_file(
        Path(os.fsdecode(single_file)),
        map_location=map_location,
        weights_only=weights_only,
        mmap=mmap,
        allow_unsafe_pickle=allow_unsafe_pickle,
    )
    return model.load_state_dict(state_dict, strict=strict)
