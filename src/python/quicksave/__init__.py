"""quicksave: Hugging Face checkpoints (safetensors shards + index) saved and loaded by a C++ core,
and an asynchronous save engine that keeps training running while a checkpoint is written.

Switching from huggingface_hub takes one import:

    from quicksave import serialization      # instead of: from huggingface_hub import serialization
    serialization.save_torch_state_dict(model.state_dict(), "ckpt", max_shard_size="2GB")
    serialization.load_torch_model(model, "ckpt")

and the engine:

    with quicksave.Checkpointer(pinned_budget_bytes="4GB") as ckpt:
        handle = ckpt.save_async(model.state_dict(), "ckpt/step-1000")
        handle.staged().result()       # before the optimizer changes the weights
        ...
        handle.committed().result()    # durable and published

Errors: ValueError where huggingface_hub raises it (bad sizes, patterns, shard names, paths),
FileNotFoundError for a missing checkpoint file, RuntimeError for strict-load key mismatches; all
of quicksave's own errors derive from quicksave.Error, whose `code` names the kind.
"""

import atexit
import logging

import torch  # noqa: F401  (loads LibTorch and torch's Python types before the extension)

from ._quicksave import (
    AlreadyExistsError,
    CancelledError,
    CorruptError,
    Error,
    FailedPreconditionError,
    BusyError,
    InternalError,
    InvalidArgumentError,
    IoError,
    NotFoundError,
    ResourceExhaustedError,
    SaveProgress,
    SaveResult,
    UnavailableError,
    VerifiedFile,
    VerifyReport,
    verify_checkpoint,
)
from ._hf import (
    MAX_SHARD_SIZE,
    PYTORCH_WEIGHTS_FILE_PATTERN,
    SAFETENSORS_INDEX_FILE,
    SAFETENSORS_SINGLE_FILE,
    SAFETENSORS_WEIGHTS_FILE_PATTERN,
    StateDictSplit,
    get_torch_storage_id,
    get_torch_storage_size,
    load_state_dict_from_file,
    load_torch_model,
    parse_size_to_int,
    save_torch_model,
    save_torch_state_dict,
    split_state_dict_into_shards_factory,
    split_torch_state_dict_into_shards,
)
from ._engine import Checkpointer, SaveHandle, _close_all
from ._loader import Loader, LoadFuture
from . import serialization

__version__ = "0.1.0"

# The C++ library's messages (a crashed save recovered, an io_uring or O_DIRECT fallback, a save
# waiting for another's lock, each save's summary at INFO) go to logging.getLogger("quicksave").
_logger = logging.getLogger("quicksave")
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _log_from_cpp(level: str, message: str) -> None:
    number = _LOG_LEVELS.get(level, logging.WARNING)
    if _logger.isEnabledFor(number):
        _logger.log(number, message)


from ._quicksave import _forward_log  # noqa: E402

_forward_log(_log_from_cpp)

# Saves still in flight at exit complete (their watcher threads are joined first), then every
# engine is freed while the interpreter is still whole; C++ messages after that go to stderr.
atexit.register(_forward_log, None)
atexit.register(_close_all)

__all__ = [
    "Loader",
    "LoadFuture",
    "AlreadyExistsError",
    "CancelledError",
    "Checkpointer",
    "CorruptError",
    "Error",
    "FailedPreconditionError",
    "BusyError",
    "InternalError",
    "InvalidArgumentError",
    "IoError",
    "MAX_SHARD_SIZE",
    "NotFoundError",
    "PYTORCH_WEIGHTS_FILE_PATTERN",
    "ResourceExhaustedError",
    "SAFETENSORS_INDEX_FILE",
    "SAFETENSORS_SINGLE_FILE",
    "SAFETENSORS_WEIGHTS_FILE_PATTERN",
    "SaveHandle",
    "SaveProgress",
    "SaveResult",
    "StateDictSplit",
    "UnavailableError",
    "VerifiedFile",
    "VerifyReport",
    "get_torch_storage_id",
    "get_torch_storage_size",
    "load_state_dict_from_file",
    "load_torch_model",
    "parse_size_to_int",
    "save_torch_model",
    "save_torch_state_dict",
    "serialization",
    "split_state_dict_into_shards_factory",
    "split_torch_state_dict_into_shards",
    "verify_checkpoint",
]
