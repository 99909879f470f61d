"""Drop-in for `huggingface_hub.serialization`: `from quicksave import serialization` exports the
same names (plus parse_size_to_int, which upstream keeps in serialization._base)."""

from ._hf import (
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

__all__ = [
    "StateDictSplit",
    "get_torch_storage_id",
    "get_torch_storage_size",
    "load_state_dict_from_file",
    "load_torch_model",
    "parse_size_to_int",
    "save_torch_model",
    "save_torch_state_dict",
    "split_state_dict_into_shards_factory",
    "split_torch_state_dict_into_shards",
]
