#!/usr/bin/env python3
"""Builds the hostile corpus of issue #13 into a scratch folder (Python stdlib only; nothing
large is committed): malformed safetensors files, index folders and torch.save `.bin` archives,
FIFOs, devices, sockets, symlinks out of the folder, and what each loader must make of them.

    make_corpus.py OUT_DIR     writes OUT_DIR/cases/<case>/... and OUT_DIR/manifest.json

Each manifest entry: {"name", "path" (relative to OUT_DIR), "expect": {runner: "ok"|"error"},
"args": {runner: [...]}, "stdout_contains": {runner: text}, "must_not_exist": [paths]}.
Runners: verify, inspect (the CLI), cxx (tests/hostile/hostile_load.cpp), py (py_load.py).
Protocol files (journals, leftovers of interrupted saves) are added by `protocol_cases()`,
the hook below, once the commit protocol rework lands.
"""
import json
import os
import socket
import struct
import sys
import zipfile

ALL = ("verify", "inspect", "cxx", "py")
LOADERS = ("cxx", "py")

# ---- safetensors -------------------------------------------------------------------------------

DTYPE_BYTES = {"F32": 4, "I64": 8, "U8": 1, "F16": 2}


def safetensors(tensors, metadata=None, header_prefix=b"", header_override=None):
    """tensors: [(name, dtype, shape, data bytes)]; offsets follow in order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset, blob = 0, b""
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blob += data
    text = header_prefix + (header_override if header_override is not None else json.dumps(header).encode())
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


def linear_ab(which=("a", "b")):
    """The tensors of two torch.nn.Linear(2, 2) named a and b (the drivers' --model ab)."""
    out = []
    for layer in which:
        out.append((f"{layer}.weight", "F32", [2, 2], f32(1, 2, 3, 4)))
        out.append((f"{layer}.bias", "F32", [2], f32(5, 6)))
    return out


def index(weight_map, metadata=None):
    return json.dumps({"metadata": metadata if metadata is not None else {"total_size": 0}, "weight_map": weight_map}, indent=2)


# ---- torch.save archives -----------------------------------------------------------------------


class Pickle:
    """Protocol-2 pickle opcodes, as torch.save writes them."""

    def __init__(self):
        self.b = bytearray(b"\x80\x02")

    def op(self, raw):
        self.b += raw
        return self

    def glob(self, module, name):
        return self.op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def str(self, s):
        data = s.encode("utf-8", "surrogatepass")
        return self.op(b"X" + struct.pack("<I", len(data)) + data)

    def int(self, n):
        if -(2**31) <= n < 2**31:
            return self.op(b"J" + struct.pack("<i", n))
        data = n.to_bytes(8, "little", signed=True)
        return self.op(b"\x8a\x08" + data)

    def ints(self, values):
        self.op(b"(")
        for v in values:
            self.int(v)
        return self.op(b"t")

    def tensor(self, key, numel, offset, sizes, strides, storage="FloatStorage"):
        self.glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
        self.op(b"(").str("storage").glob("torch", storage).str(key).str("cpu").int(numel).op(b"tQ")
        self.int(offset).ints(sizes).ints(strides).op(b"\x89")
        self.glob("collections", "OrderedDict").op(b")R")
        return self.op(b"tR")

    def bytes(self):
        return bytes(self.b) + b"."


def state_dict_pickle(entries):
    """entries: [(name, key, numel, offset, sizes, strides)] as an OrderedDict."""
    p = Pickle().glob("collections", "OrderedDict").op(b")R(")
    for name, key, numel, offset, sizes, strides in entries:
        p.str(name).tensor(key, numel, offset, sizes, strides)
    return p.op(b"u").bytes()


def torch_zip(path, pickle_bytes, storages, compression=zipfile.ZIP_STORED, prefix="archive"):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr(f"{prefix}/data.pkl", pickle_bytes)
        for key, data in storages.items():
            z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", b"3\n")


def patch_central_sizes(path, entry_name, size):
    """Rewrites the compressed and uncompressed sizes of `entry_name` in the central directory."""
    data = bytearray(open(path, "rb").read())
    name = entry_name.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + name_len]) == name:
            struct.pack_into("<II", data, at + 20, size, size)
            open(path, "wb").write(bytes(data))
            return
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(entry_name)


def valid_ab_bin(path):
    entries, storages = [], {}
    for i, (name, _, shape, data) in enumerate(linear_ab()):
        strides = [shape[1], 1] if len(shape) == 2 else [1]
        entries.append((name, str(i), len(data) // 4, 0, shape, strides))
        storages[str(i)] = data
    torch_zip(path, state_dict_pickle(entries), storages)


# ---- the corpus --------------------------------------------------------------------------------


class Corpus:
    def __init__(self, out):
        self.out = out
        self.cases = []

    def case(self, name, target, expect, args=None, stdout_contains=None, must_not_exist=()):
        """A case folder; `target` is the path the runners get, relative to it."""
        folder = os.path.join(self.out, "cases", name)
        os.makedirs(folder, exist_ok=True)
        if isinstance(expect, str):
            expect = {r: expect for r in ALL}
        self.cases.append(
            {
                "name": name,
                "path": os.path.relpath(os.path.join(folder, target) if target else folder, self.out),
                "expect": expect,
                "args": args or {},
                "stdout_contains": stdout_contains or {},
                "must_not_exist": [os.path.relpath(os.path.join(folder, p), self.out) for p in must_not_exist],
            }
        )
        return folder


def write(path, data):
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def safetensors_cases(c):
    d = c.case("valid_single", "", "ok", stdout_contains={"inspect": "a.weight"})
    write(os.path.join(d, "model.safetensors"), safetensors(linear_ab(), {"format": "pt"}))

    d = c.case("valid_sharded", "", "ok", args={"cxx": ["--model", "ab", "--strict"], "py": ["--model", "ab", "--strict"]})
    write(os.path.join(d, "model-00001-of-00002.safetensors"), safetensors(linear_ab("a"), {"format": "pt"}))
    write(os.path.join(d, "model-00002-of-00002.safetensors"), safetensors(linear_ab("b"), {"format": "pt"}))
    wm = {n: f"model-0000{1 if n.startswith('a') else 2}-of-00002.safetensors" for n, *_ in linear_ab()}
    write(os.path.join(d, "model.safetensors.index.json"), index(wm, {"total_size": 48}))

    # Item 6: the index maps b.weight to a shard that does not hold it (strict or not: an error;
    # the index's keys are the model's, so strict's key check passes). inspect reads headers only.
    for strict in (True, False):
        name = "index_entry_missing_from_shard" + ("_strict" if strict else "")
        flags = ["--model", "ab"] + (["--strict"] if strict else [])
        d = c.case(name, "", {"verify": "error", "inspect": "ok", "cxx": "error", "py": "error"}, args={"cxx": flags, "py": flags},
                   stdout_contains={"cxx": "the index maps b.weight to", "py": "the index maps b.weight to", "verify": "b.weight"})
        write(os.path.join(d, "model-00001-of-00002.safetensors"), safetensors(linear_ab("a") + [("b.bias", "F32", [2], f32(5, 6))], {"format": "pt"}))
        write(os.path.join(d, "model-00002-of-00002.safetensors"), safetensors([("c", "F32", [1], f32(0))], {"format": "pt"}))
        wm = {"a.weight": "model-00001-of-00002.safetensors", "a.bias": "model-00001-of-00002.safetensors",
              "b.weight": "model-00002-of-00002.safetensors", "b.bias": "model-00001-of-00002.safetensors"}
        write(os.path.join(d, "model.safetensors.index.json"), index(wm))

    # Item 7: a BOM before the header JSON, a dimension above INT64_MAX, NUL in names.
    d = c.case("header_bom", "model.safetensors", "error")
    write(os.path.join(d, "model.safetensors"), safetensors(linear_ab(), {"format": "pt"}, header_prefix=b"\xef\xbb\xbf"))
    d = c.case("index_bom", "", "error")
    write(os.path.join(d, "model-00001-of-00001.safetensors"), safetensors(linear_ab(), {"format": "pt"}))
    write(os.path.join(d, "model.safetensors.index.json"),
          b"\xef\xbb\xbf" + index({n: "model-00001-of-00001.safetensors" for n, *_ in linear_ab()}).encode())
    for dim in (2**63, 2**64 - 1):
        d = c.case(f"dimension_{dim}", "model.safetensors", "error", stdout_contains={"verify": "larger than 2^63-1"})
        write(os.path.join(d, "model.safetensors"), safetensors([("big", "F32", [dim, 0], b"")], {"format": "pt"}))
    d = c.case("nul_in_names", "model.safetensors", "ok", stdout_contains={"inspect": "x\\x00hidden", "verify": "result: OK"})
    write(os.path.join(d, "model.safetensors"), safetensors([("x\x00hidden", "F32", [1], f32(1)), ("y\nforged line", "F32", [1], f32(2))], {"format": "pt"}))
    d = c.case("nul_in_index_names", "", {"verify": "error", "inspect": "ok", "cxx": "error", "py": "error"},
               stdout_contains={"verify": "\\x00"})
    write(os.path.join(d, "model-00001-of-00001.safetensors"), safetensors([("x", "F32", [1], f32(1))], {"format": "pt"}))
    write(os.path.join(d, "model.safetensors.index.json"), index({"x": "model-00001-of-00001.safetensors", "ghost\x00tensor": "model-00001-of-00001.safetensors"}))

    # Header lengths and sizes that do not fit the file.
    d = c.case("header_length_too_large", "model.safetensors", "error")
    write(os.path.join(d, "model.safetensors"), struct.pack("<Q", 2**40) + b"{}      ")
    d = c.case("header_length_past_file", "model.safetensors", "error")
    write(os.path.join(d, "model.safetensors"), struct.pack("<Q", 5000) + b"{}      ")
    d = c.case("data_shorter_than_declared", "model.safetensors", "error")
    write(os.path.join(d, "model.safetensors"), safetensors([("t", "F32", [1000], f32(1))], header_override=json.dumps({"t": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()))


def special_file_cases(c, outside_file):
    """FIFOs, devices, sockets, directories and links where regular files are expected."""
    shard = "model-00001-of-00001.safetensors"
    idx = "model.safetensors.index.json"
    good_index = index({n: shard for n, *_ in linear_ab()})

    def fifo(path):
        os.mkfifo(path)

    def sock(path):
        # bind() takes at most 108 bytes of path: bind the bare name from inside the folder.
        here = os.getcwd()
        os.chdir(os.path.dirname(path))
        try:
            s = socket.socket(socket.AF_UNIX)
            s.bind(os.path.basename(path))
            s.close()
        finally:
            os.chdir(here)

    makers = {
        "fifo": fifo,
        "dev_zero": lambda p: os.symlink("/dev/zero", p),
        "dev_null": lambda p: os.symlink("/dev/null", p),
        "directory": os.mkdir,
        "socket": sock,
        "outside_file": lambda p: os.symlink(outside_file, p),
        "dangling_link": lambda p: os.symlink("/nonexistent/quicksave-hostile", p),
    }
    for kind, make in makers.items():
        # as the single model file
        d = c.case(f"{kind}_as_model_file", "", "error")
        make(os.path.join(d, "model.safetensors"))
        d = c.case(f"{kind}_as_model_file_named", "model.safetensors", "error")
        make(os.path.join(d, "model.safetensors"))
        # as the index: loaders, like the reference, take only a regular file as the index and
        # otherwise look for a single model file (there is one); the CLI reports the bad index.
        exp = {"verify": "error", "inspect": "error", "cxx": "ok", "py": "ok"}
        if kind == "dangling_link":
            exp = "ok"  # no index at all
        if kind == "outside_file":
            exp = "error"  # a regular file, read as the index: not JSON
        d = c.case(f"{kind}_as_index", "", exp)
        write(os.path.join(d, shard), safetensors(linear_ab(), {"format": "pt"}))
        make(os.path.join(d, idx))
        # as a shard
        d = c.case(f"{kind}_as_shard", "", "error")
        write(os.path.join(d, idx), good_index)
        make(os.path.join(d, shard))
        # as a .bin file
        d = c.case(f"{kind}_as_bin", "", {"verify": "error", "inspect": "error", "cxx": "error", "py": "error"},
                   args={"cxx": ["--bin"], "py": ["--bin"]})
        make(os.path.join(d, "pytorch_model.bin"))

    # An index far over the size cap (sparse: no disk used).
    d = c.case("index_over_size_cap", "", "error", stdout_contains={"verify": "too large"})
    write(os.path.join(d, shard), safetensors(linear_ab(), {"format": "pt"}))
    with open(os.path.join(d, idx), "wb") as f:
        f.write(b'{"weight_map": {')
        f.truncate(150_000_000)


def path_cases(c, victim_dir):
    """Index entries that name files outside the folder, however spelled."""
    victim = os.path.join(victim_dir, "model-00001-of-00001.safetensors")
    rel_victim = os.path.relpath(victim, os.path.join(c.out, "cases", "x"))
    names = {
        "absolute": victim,
        "dotdot": rel_victim,
        "dotdot_inner": "sub/../" + rel_victim,
        "backslash_dotdot": rel_victim.replace("/", "\\"),
        "percent_encoded": rel_victim.replace("..", "%2e%2e").replace("/", "%2f"),
        "nul_truncated": "model-00001-of-00001.safetensors\x00/../../x.safetensors",
        "drive_letter": "C:model-00001-of-00001.safetensors",
        "subdir": "sub/model-00001-of-00001.safetensors",
        "wrong_extension": "model-00001-of-00001.bin",
        "empty": "",
    }
    for kind, shard in names.items():
        d = c.case(f"index_path_{kind}", "", "error")
        os.makedirs(os.path.join(d, "sub"), exist_ok=True)
        write(os.path.join(d, "model.safetensors.index.json"), index({n: shard for n, *_ in linear_ab()}))


def big_index_cases(c, entries):
    """Many entries: the index must parse in linear time (quadratic took hours for millions), then
    the loaders fail cleanly on what the entries name."""
    shard = "model-00001-of-00001.safetensors"

    def big(name, count, target_of, contains):
        d = c.case(name, "", dict.fromkeys(ALL, "error"), stdout_contains=contains)
        write(os.path.join(d, shard), safetensors(linear_ab(), {"format": "pt"}))
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            f.write('{\n  "metadata": {\n    "total_size": 48\n  },\n  "weight_map": {\n')
            f.write(",\n".join(f'    "layer.{i}.weight": "{target_of(i)}"' for i in range(count)))
            f.write("\n  }\n}")

    # Every entry names a file outside the folder: one problem, whatever the count.
    big(f"index_{entries}_entries_outside", entries, lambda i: "../victim/" + shard, {"verify": "without '..'"})
    # Entries the shard does not hold: one problem each (verify prints them all).
    d = big("index_100000_entries_missing", 100_000, lambda i: shard,
            {"verify": "which has no tensor of that name", "cxx": "does not hold it", "py": "does not hold it"})
    c.cases[-1]["expect"]["inspect"] = "ok"  # inspect reads headers only


def bin_cases(c, marker):
    """torch.save archives: nested pickles, declared sizes, opcode floods, code."""
    def bin_case(name, expect="error", target="pytorch_model.bin", contains=None):
        exp = {"cxx": expect, "py": expect, "verify": "error", "inspect": "error"}
        return c.case(name, target, exp, stdout_contains={"cxx": contains, "py": contains} if contains else None)

    d = bin_case("bin_valid", "ok")
    valid_ab_bin(os.path.join(d, "pytorch_model.bin"))
    d = c.case("bin_valid_folder", "", {"cxx": "ok", "py": "ok", "verify": "error", "inspect": "error"},
               args={"cxx": ["--model", "ab", "--strict", "--bin"], "py": ["--model", "ab", "--strict", "--bin"]})
    valid_ab_bin(os.path.join(d, "pytorch_model.bin"))

    def archive(name, program, storages=None, contains=None, **kw):
        d = bin_case(name, contains=contains)
        torch_zip(os.path.join(d, "pytorch_model.bin"), program, storages or {}, **kw)
        return d

    # 300,000 nested tuples, both spellings, and nested lists / dicts.
    archive("bin_nested_tuple1", b"\x80\x02)" + b"\x85" * 300_000 + b".", contains="nesting")
    archive("bin_nested_mark_tuples", b"\x80\x02" + b"(" * 300_000 + b")" + b"t" * 300_000 + b".")
    archive("bin_nested_lists", b"\x80\x02" + b"]" * 300_000 + b"a" * 299_999 + b".", contains="nesting")
    archive("bin_nested_dicts", b"\x80\x02}" + b"N}" * 300_000 + b"s" * 300_000 + b".", contains="nesting")
    # Opcode floods: 10 M MARKs, 10 M Nones, 4 M memo puts, a memo key of 2^32-1, strings.
    archive("bin_10M_marks", b"\x80\x02" + b"(" * 10_000_000 + b".", contains="MARK")
    archive("bin_10M_nones", b"\x80\x02" + b"N" * 10_000_000 + b".", contains="stack")
    archive("bin_memo_flood", b"\x80\x02N" + b"\x94" * 5_000_000 + b".", contains="memo")
    archive("bin_memo_huge_key", b"\x80\x02Nr\xff\xff\xff\xff.", contains="memo")
    archive("bin_value_flood", b"\x80\x02]" + b"U\x00a" * 3_000_000 + b".")
    archive("bin_global_flood", b"\x80\x02" + b"ca\nb\n" * 1_000_000 + b".", contains="GLOBAL")
    # Declared sizes larger than the data.
    archive("bin_storage_3GB_declared", state_dict_pickle([("w", "0", 750_000_000, 0, [750_000_000], [1])]),
            {"0": f32(1)}, contains="holds 4 bytes")
    d = bin_case("bin_zip_entry_3GB_declared", contains="declares 3000000000 bytes")
    path = os.path.join(d, "pytorch_model.bin")
    torch_zip(path, state_dict_pickle([("w", "0", 750_000_000, 0, [750_000_000], [1])]), {"0": b"\0" * 3_000_000})
    patch_central_sizes(path, "archive/data/0", 3_000_000_000)
    d = bin_case("bin_deflated_entries", contains="compressed")
    path = os.path.join(d, "pytorch_model.bin")
    torch_zip(path, state_dict_pickle([("w", "0", 1000, 0, [1000], [1])]), {"0": b"\0" * 4000}, compression=zipfile.ZIP_DEFLATED)
    d = bin_case("bin_deflated_bomb", contains="compressed")
    path = os.path.join(d, "pytorch_model.bin")
    torch_zip(path, state_dict_pickle([("w", "0", 750_000_000, 0, [750_000_000], [1])]), {"0": b"\0" * 3_000_000},
              compression=zipfile.ZIP_DEFLATED)
    patch_central_sizes(path, "archive/data/0", 3_000_000_000)
    archive("bin_view_past_storage", state_dict_pickle([("w", "0", 4, 2, [2, 2], [2, 1])]), {"0": f32(1, 2, 3, 4)}, contains="reaches element")
    archive("bin_stride_overflow", state_dict_pickle([("w", "0", 4, 0, [2, 2], [2**62, 1])]), {"0": f32(1, 2, 3, 4)})
    archive("bin_negative_size", state_dict_pickle([("w", "0", 4, 0, [-1], [1])]), {"0": f32(1, 2, 3, 4)})
    archive("bin_numel_overflow", state_dict_pickle([("w", "0", 2**62, 0, [1], [1])]), {"0": f32(1)})
    archive("bin_missing_storage_entry", state_dict_pickle([("w", "9", 1, 0, [1], [1])]), {"0": f32(1)})
    archive("bin_storage_declared_twice", state_dict_pickle([("w", "0", 1, 0, [1], [1]), ("v", "0", 2, 0, [1], [1])]), {"0": f32(1, 2)})
    # Types where the reader expects others (these gave `std::get: wrong index for variant`).
    p = Pickle().glob("collections", "OrderedDict").op(b")R(").str("w").glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
    p.op(b"(").str("storage").glob("torch", "FloatStorage").int(0).str("cpu").int(1).op(b"tQ")
    archive("bin_storage_key_not_str", p.int(0).ints([1]).ints([1]).op(b"\x89)tRu").bytes(), {"0": f32(1)}, contains="expects a str")
    p = Pickle().glob("collections", "OrderedDict").op(b")R(").str("w").glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
    p.op(b"(").str("storage").glob("torch", "FloatStorage").str("0").str("cpu").str("1").op(b"tQ")
    archive("bin_numel_not_int", p.int(0).ints([1]).ints([1]).op(b"\x89)tRu").bytes(), {"0": f32(1)}, contains="expects an int")
    p = Pickle().glob("collections", "OrderedDict").op(b")R(").str("w").glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
    p.op(b"(").str("storage").glob("torch", "FloatStorage").str("0").str("cpu").int(1).op(b"tQ")
    archive("bin_size_not_ints", p.int(0).op(b"(").str("x").op(b"t").ints([1]).op(b"\x89)tRu").bytes(), {"0": f32(1)})
    archive("bin_offset_is_tuple", Pickle().op(b"}").str("w").glob("torch._utils", "_rebuild_tensor_v2").op(b"(").op(b"(").str("storage")
            .glob("torch", "FloatStorage").str("0").str("cpu").int(1).op(b"tQ)").ints([1]).ints([1]).op(b"tRs").bytes(), {"0": f32(1)})
    archive("bin_setitem_on_list", b"\x80\x02]NNs.")
    archive("bin_reduce_non_global", b"\x80\x02N)R.")
    archive("bin_persid_not_tuple", b"\x80\x02NQ.")
    archive("bin_stack_underflow", b"\x80\x02s.")
    archive("bin_pop_mark_frame", b"\x80\x02}(s.")
    archive("bin_no_stop", b"\x80\x02}")
    archive("bin_unknown_opcode", b"\x80\x02\xff.")
    archive("bin_truncated_string", b"\x80\x02X\xff\xff\xff\x7fabc")
    archive("bin_top_not_dict", b"\x80\x02].")
    archive("bin_key_not_str", b"\x80\x02}K\x01Ns.")
    archive("bin_value_not_tensor", b"\x80\x02}X\x01\x00\x00\x00aNs.")
    archive("bin_duplicate_key", Pickle().op(b"}(").str("w").glob("torch._utils", "_rebuild_tensor_v2").op(b"(").op(b"(").str("storage")
            .glob("torch", "FloatStorage").str("0").str("cpu").int(1).op(b"tQ").int(0).ints([1]).ints([1]).op(b"\x89)tRq\x00")
            .str("w").op(b"h\x00u").bytes(), {"0": f32(1)}, contains="twice")
    archive("bin_memo_cycle", b"\x80\x02]q\x00h\x00a}X\x01\x00\x00\x00ah\x00s.")
    # Code: a pickle that would run a command; the marker file must not appear.
    cmd = f"touch {marker}"
    archive("bin_runs_code", Pickle().glob("posix", "system").op(b"(").str(cmd).op(b"tR").bytes(), contains="refusing")
    c.cases[-1]["must_not_exist"] = [os.path.relpath(marker, c.out)]
    archive("bin_runs_code_in_dict", Pickle().op(b"}").str("w").glob("builtins", "eval").op(b"(").str(f"__import__('os').system('{cmd}')")
            .op(b"tRs").bytes(), contains="refusing")
    c.cases[-1]["must_not_exist"] = [os.path.relpath(marker, c.out)]
    # Not zip archives at all, broken zips.
    d = bin_case("bin_legacy_raw_pickle")
    write(os.path.join(d, "pytorch_model.bin"), Pickle().op(b"}").bytes())
    d = bin_case("bin_empty_file")
    write(os.path.join(d, "pytorch_model.bin"), b"")
    d = bin_case("bin_truncated_zip")
    path = os.path.join(d, "pytorch_model.bin")
    valid_ab_bin(path)
    data = open(path, "rb").read()
    write(path, data[: len(data) // 2] + data[-22:])
    d = bin_case("bin_no_data_pkl")
    with zipfile.ZipFile(os.path.join(d, "pytorch_model.bin"), "w") as z:
        z.writestr("archive/version", b"3\n")
    d = bin_case("bin_central_directory_entries_lie")
    path = os.path.join(d, "pytorch_model.bin")
    valid_ab_bin(path)
    data = bytearray(open(path, "rb").read())
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 0xFFFE, 0xFFFE)
    write(path, bytes(data))


def protocol_cases(c):
    """Hook for issue #13 item 1: planted journals and other protocol files (absolute, relative,
    `..` and encoded paths in every protocol file) go here once the commit-protocol rework
    lands; each case must also list in must_not_exist / the victim folder what it tries to touch."""


def main():
    out = os.path.abspath(sys.argv[1])
    big = int(os.environ.get("QUICKSAVE_HOSTILE_BIG_INDEX", "1000000"))
    os.makedirs(out, exist_ok=True)
    victim_dir = os.path.join(out, "victim")  # the sibling folder the driver snapshots
    os.makedirs(victim_dir, exist_ok=True)
    write(os.path.join(victim_dir, "model-00001-of-00001.safetensors"), safetensors(linear_ab(), {"format": "pt"}))
    write(os.path.join(victim_dir, "secret.txt"), "not to be touched\n")
    c = Corpus(out)
    safetensors_cases(c)
    special_file_cases(c, os.path.join(victim_dir, "secret.txt"))
    path_cases(c, victim_dir)
    big_index_cases(c, big)
    bin_cases(c, os.path.join(out, "code-ran"))
    protocol_cases(c)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"victim": "victim", "cases": c.cases}, f, indent=1)
    print(f"{len(c.cases)} cases in {out}")


if __name__ == "__main__":
    main()
